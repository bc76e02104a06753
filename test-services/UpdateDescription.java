// The `updateDescription` of an update event, computed the way MongoDB 5.0+ reports it from its
// delta oplog entries: the fields that changed (by dotted path) with their new values, the fields
// that were removed, and the arrays that were shortened. The paths of the update operators decide
// how deep a change is reported: `$set: {a: {b: 1}}` reports `a` whole, `$set: {"a.b": 1}` reports
// `a.b`; array operators ($push, $pull, ...) report the changed elements (`arr.3`) and truncations.
// Without an update specification (legacy entries, pipeline updates) it is a plain recursive diff.

import de.bwaldvogel.mongo.bson.Document;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

final class UpdateDescription {
    private static final Set<String> ARRAY_OPERATORS = Set.of("$push", "$addToSet", "$pop", "$pull", "$pullAll");

    /** One path of the update specification, split at the dots, with the operator that names it. */
    private record Pattern(List<String> segments, String operator) {
    }

    private final List<Pattern> patterns;
    private final Document updatedFields = new Document();
    private final List<String> removedFields = new ArrayList<>();
    private final List<Document> truncatedArrays = new ArrayList<>();

    private UpdateDescription(Document spec) {
        if (spec == null) {
            patterns = null;
            return;
        }
        patterns = new ArrayList<>();
        for (Map.Entry<String, Object> operator : spec.entrySet()) {
            if (!(operator.getValue() instanceof Document fields)) {
                continue;
            }
            for (Map.Entry<String, Object> field : fields.entrySet()) {
                patterns.add(new Pattern(List.of(field.getKey().split("\\.")), operator.getKey()));
                if (operator.getKey().equals("$rename") && field.getValue() instanceof String target) {
                    patterns.add(new Pattern(List.of(target.split("\\.")), operator.getKey()));
                }
            }
        }
    }

    /** `{updatedFields, removedFields, truncatedArrays}` for the change from `before` to `after`. */
    static Document describe(Document before, Document after, Document spec) {
        UpdateDescription description = new UpdateDescription(spec);
        description.diffDocuments(before, after, "", List.of());
        return description.toDocument();
    }

    /** The description straight from an update specification, for entries without images. */
    static Document fromSpecification(Document spec) {
        UpdateDescription description = new UpdateDescription(null);
        for (Map.Entry<String, Object> operator : spec.entrySet()) {
            if (!(operator.getValue() instanceof Document fields)) {
                continue;
            }
            for (Map.Entry<String, Object> field : fields.entrySet()) {
                if (operator.getKey().equals("$unset")) {
                    description.removedFields.add(field.getKey());
                } else {
                    description.updatedFields.put(field.getKey(), field.getValue());
                }
            }
        }
        return description.toDocument();
    }

    private Document toDocument() {
        return new Document()
            .append("updatedFields", updatedFields)
            .append("removedFields", removedFields)
            .append("truncatedArrays", truncatedArrays);
    }

    private void diffDocuments(Document before, Document after, String prefix, List<String> path) {
        for (String key : before.keySet()) {
            if (!after.containsKey(key)) {
                removedFields.add(prefix + key);
            }
        }
        for (Map.Entry<String, Object> field : after.entrySet()) {
            String key = field.getKey();
            Object newValue = field.getValue();
            if (!before.containsKey(key)) {
                updatedFields.put(prefix + key, newValue);
                continue;
            }
            diffValues(before.get(key), newValue, prefix + key, append(path, key));
        }
    }

    private void diffValues(Object oldValue, Object newValue, String fieldPath, List<String> path) {
        if (Objects.equals(oldValue, newValue)) {
            return;
        }
        if (oldValue instanceof Document oldDocument && newValue instanceof Document newDocument && descends(path)) {
            diffDocuments(oldDocument, newDocument, fieldPath + ".", path);
        } else if (oldValue instanceof List<?> oldList && newValue instanceof List<?> newList
            && (descends(path) || arrayOperatorAt(path))) {
            diffArrays(oldList, newList, fieldPath, path);
        } else {
            updatedFields.put(fieldPath, newValue);
        }
    }

    private void diffArrays(List<?> before, List<?> after, String fieldPath, List<String> path) {
        int common = Math.min(before.size(), after.size());
        for (int i = 0; i < common; i++) {
            diffValues(before.get(i), after.get(i), fieldPath + "." + i, append(path, Integer.toString(i)));
        }
        for (int i = common; i < after.size(); i++) {
            updatedFields.put(fieldPath + "." + i, after.get(i));
        }
        if (after.size() < before.size()) {
            truncatedArrays.add(new Document("field", fieldPath).append("newSize", after.size()));
        }
    }

    /** Whether some path of the specification goes below `path`. */
    private boolean descends(List<String> path) {
        if (patterns == null) {
            return true;
        }
        return patterns.stream().anyMatch(p -> p.segments().size() > path.size() && prefixMatches(p.segments(), path));
    }

    private boolean arrayOperatorAt(List<String> path) {
        return patterns != null && patterns.stream().anyMatch(p -> p.segments().size() == path.size()
            && ARRAY_OPERATORS.contains(p.operator()) && prefixMatches(p.segments(), path));
    }

    private static boolean prefixMatches(List<String> pattern, List<String> path) {
        for (int i = 0; i < path.size(); i++) {
            String segment = pattern.get(i);
            boolean positional = segment.equals("$") || segment.startsWith("$[");
            if (!positional && !segment.equals(path.get(i))) {
                return false;
            }
        }
        return true;
    }

    private static List<String> append(List<String> path, String segment) {
        List<String> longer = new ArrayList<>(path.size() + 1);
        longer.addAll(path);
        longer.add(segment);
        return longer;
    }
}
