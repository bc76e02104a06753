//! The MongoDB Kafka Connector's JSON (`output.format.key`/`output.format.value = json`),
//! byte for byte: what the MongoDB Java driver's `BsonDocument.toJson(settings)` writes with
//! the settings of each `output.json.formatter` the connector ships (read in its source,
//! `source/json/formatter/`):
//! - `DefaultJson` (the connector's default): `JsonMode.STRICT`, the legacy extended JSON:
//!   `{"$date": <millis>}`, `{"$numberLong": "..."}`, `{"$binary": "...", "$type": "00"}`,
//!   `{"$regex": ..., "$options": ...}`, doubles as bare numbers (NaN and the infinities too,
//!   which no JSON parser reads).
//! - `ExtendedJson`: `JsonMode.EXTENDED`, canonical extended JSON v2.
//! - `SimplifiedJson`: `JsonMode.RELAXED` with ObjectIds as hex, dates as ISO-8601 text,
//!   decimals and symbols as text, binary as base64 text.
//!
//! The Java writer's own ways are kept: `{"a": 1, "b": [1, 2]}` spacing; doubles as Java's
//! `Double.toString` (`1.0E300`, `1234567.0`, `4.9E-324`); strings escaped per UTF-16 unit,
//! every character outside letters, digits, punctuation, symbols and spaces as `\uXXXX`
//! (combining marks, format and private-use characters, every character beyond U+FFFF as its
//! two surrogates); regex options sorted. Written straight from the raw BSON.
//!
//! Two differences that depend on the Java runtime the connector runs in: characters are
//! classified by Unicode 16 here (a Java 17 runtime knows Unicode 13, and escapes the
//! characters assigned since), and a double is written with the shortest digits that read
//! back as it, as Java 19 and later do; Java 18 and earlier write a few doubles with more
//! digits than needed (`1.0E23` as `9.999999999999999E22`, JDK-4511638).

use std::io::Write;

use bson::{RawArray, RawBsonRef, RawDocument};

use super::base64::encode as base64;
use super::extjson::write::RawError;

/// The connector's `output.json.formatter` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formatter {
    /// `com.mongodb.kafka.connect.source.json.formatter.DefaultJson`.
    Default,
    /// `com.mongodb.kafka.connect.source.json.formatter.ExtendedJson`.
    Extended,
    /// `com.mongodb.kafka.connect.source.json.formatter.SimplifiedJson`.
    Simplified,
}

/// `doc` as the connector writes it with `formatter`.
pub fn to_vec(doc: &RawDocument, formatter: Formatter) -> Result<Vec<u8>, RawError> {
    let mut out = Vec::with_capacity(doc.as_bytes().len() * 2 + 16);
    Writer {
        out: &mut out,
        formatter,
    }
    .document(doc)?;
    Ok(out)
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    formatter: Formatter,
}

impl Writer<'_> {
    fn raw(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
    }

    fn display(&mut self, value: impl std::fmt::Display) {
        // Writing into a `Vec` cannot fail.
        let _ = write!(self.out, "{value}");
    }

    fn document(&mut self, doc: &RawDocument) -> Result<(), RawError> {
        self.out.push(b'{');
        for (i, element) in doc.iter().enumerate() {
            let (key, value) = element?;
            if i > 0 {
                self.raw(", ");
            }
            java_string(self.out, key);
            self.raw(": ");
            self.value(value)?;
        }
        self.out.push(b'}');
        Ok(())
    }

    fn array(&mut self, array: &RawArray) -> Result<(), RawError> {
        self.out.push(b'[');
        for (i, value) in array.into_iter().enumerate() {
            if i > 0 {
                self.raw(", ");
            }
            self.value(value?)?;
        }
        self.out.push(b']');
        Ok(())
    }

    /// `{"<name>": "<text>"}`, `text` needing no escaping.
    fn wrapped_text(&mut self, name: &str, text: impl std::fmt::Display) {
        self.raw("{\"");
        self.raw(name);
        self.raw("\": \"");
        self.display(text);
        self.raw("\"}");
    }

    /// `"<text>"`, `text` needing no escaping.
    fn quoted(&mut self, text: impl std::fmt::Display) {
        self.out.push(b'"');
        self.display(text);
        self.out.push(b'"');
    }

    fn object_id(&mut self, hex: &str) {
        if self.formatter == Formatter::Simplified {
            self.quoted(hex);
        } else {
            self.wrapped_text("$oid", hex);
        }
    }

    fn value(&mut self, value: RawBsonRef<'_>) -> Result<(), RawError> {
        use Formatter::{Default, Extended, Simplified};
        let formatter = self.formatter;
        match value {
            RawBsonRef::Double(f) => match formatter {
                Default => self.raw(&java_double(f)),
                Simplified if f.is_finite() => self.raw(&java_double(f)),
                _ => self.wrapped_text("$numberDouble", java_double(f)),
            },
            RawBsonRef::String(s) => java_string(self.out, s),
            RawBsonRef::Document(doc) => self.document(doc)?,
            RawBsonRef::Array(array) => self.array(array)?,
            RawBsonRef::Binary(binary) => {
                let text = base64(binary.bytes);
                let subtype = format!("{:02X}", u8::from(binary.subtype));
                match formatter {
                    Default => {
                        self.raw("{\"$binary\": \"");
                        self.raw(&text);
                        self.raw("\", \"$type\": \"");
                        self.raw(&subtype);
                        self.raw("\"}");
                    }
                    Extended => {
                        self.raw("{\"$binary\": {\"base64\": \"");
                        self.raw(&text);
                        self.raw("\", \"subType\": \"");
                        self.raw(&subtype);
                        self.raw("\"}}");
                    }
                    Simplified => self.quoted(text),
                }
            }
            RawBsonRef::Undefined => self.raw("{\"$undefined\": true}"),
            RawBsonRef::ObjectId(oid) => self.object_id(&oid.to_hex()),
            RawBsonRef::Boolean(b) => self.raw(if b { "true" } else { "false" }),
            RawBsonRef::DateTime(date) => {
                let millis = date.timestamp_millis();
                match formatter {
                    Default => {
                        self.raw("{\"$date\": ");
                        self.display(millis);
                        self.out.push(b'}');
                    }
                    Extended => {
                        self.raw("{\"$date\": ");
                        self.wrapped_text("$numberLong", millis);
                        self.out.push(b'}');
                    }
                    Simplified => {
                        self.out.push(b'"');
                        iso_date_time(self.out, millis);
                        self.out.push(b'"');
                    }
                }
            }
            RawBsonRef::Null => self.raw("null"),
            RawBsonRef::RegularExpression(regex) => {
                let mut options: Vec<char> = regex.options.chars().collect();
                options.sort_unstable();
                let options: String = options.into_iter().collect();
                if formatter == Default {
                    self.raw("{\"$regex\": ");
                    java_string(self.out, regex.pattern);
                    self.raw(", \"$options\": ");
                    java_string(self.out, &options);
                    self.out.push(b'}');
                } else {
                    self.raw("{\"$regularExpression\": {\"pattern\": ");
                    java_string(self.out, regex.pattern);
                    self.raw(", \"options\": ");
                    java_string(self.out, &options);
                    self.raw("}}");
                }
            }
            RawBsonRef::DbPointer(_) => {
                // Its parts are private to the `bson` crate; its extended JSON names them.
                let json = bson::Bson::try_from(value.to_raw_bson())?.into_relaxed_extjson();
                let pointer = &json["$dbPointer"];
                let namespace = pointer["$ref"].as_str().unwrap_or_default();
                let id = pointer["$id"]["$oid"].as_str().unwrap_or_default();
                if formatter == Extended {
                    self.raw("{\"$dbPointer\": {\"$ref\": ");
                    java_string(self.out, namespace);
                    self.raw(", \"$id\": ");
                    self.object_id(id);
                    self.raw("}}");
                } else {
                    self.raw("{\"$ref\": ");
                    java_string(self.out, namespace);
                    self.raw(", \"$id\": ");
                    self.object_id(id);
                    self.out.push(b'}');
                }
            }
            RawBsonRef::JavaScriptCode(code) => {
                self.raw("{\"$code\": ");
                java_string(self.out, code);
                self.out.push(b'}');
            }
            RawBsonRef::Symbol(symbol) => {
                if formatter == Simplified {
                    java_string(self.out, symbol);
                } else {
                    self.raw("{\"$symbol\": ");
                    java_string(self.out, symbol);
                    self.out.push(b'}');
                }
            }
            RawBsonRef::JavaScriptCodeWithScope(with_scope) => {
                self.raw("{\"$code\": ");
                java_string(self.out, with_scope.code);
                self.raw(", \"$scope\": ");
                self.document(with_scope.scope)?;
                self.out.push(b'}');
            }
            RawBsonRef::Int32(i) if formatter == Extended => self.wrapped_text("$numberInt", i),
            RawBsonRef::Int32(i) => self.display(i),
            RawBsonRef::Timestamp(ts) => {
                self.raw("{\"$timestamp\": {\"t\": ");
                self.display(ts.time);
                self.raw(", \"i\": ");
                self.display(ts.increment);
                self.raw("}}");
            }
            RawBsonRef::Int64(i) if formatter == Simplified => self.display(i),
            RawBsonRef::Int64(i) => self.wrapped_text("$numberLong", i),
            RawBsonRef::Decimal128(d) if formatter == Simplified => self.quoted(d),
            RawBsonRef::Decimal128(d) => self.wrapped_text("$numberDecimal", d),
            RawBsonRef::MinKey => self.raw("{\"$minKey\": 1}"),
            RawBsonRef::MaxKey => self.raw("{\"$maxKey\": 1}"),
        }
        Ok(())
    }
}

/// A string as the Java driver's `StrictCharacterStreamJsonWriter.writeStringHelper` writes
/// it: per UTF-16 unit, the usual escapes, letters, digits, punctuation, symbols and spaces as
/// they are, everything else (controls, marks, format, separators other than spaces,
/// private use, unassigned, surrogates) as `\uXXXX` in lower-case hex.
fn java_string(out: &mut Vec<u8>, text: &str) {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    out.push(b'"');
    let mut units = [0_u16; 2];
    for c in text.chars() {
        let escaped = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        if let Some(escaped) = escaped {
            out.extend_from_slice(escaped.as_bytes());
            continue;
        }
        let plain = c.len_utf16() == 1
            && matches!(
                get_general_category(c),
                G::UppercaseLetter
                    | G::LowercaseLetter
                    | G::TitlecaseLetter
                    | G::OtherLetter
                    | G::DecimalNumber
                    | G::LetterNumber
                    | G::OtherNumber
                    | G::SpaceSeparator
                    | G::ConnectorPunctuation
                    | G::DashPunctuation
                    | G::OpenPunctuation
                    | G::ClosePunctuation
                    | G::InitialPunctuation
                    | G::FinalPunctuation
                    | G::OtherPunctuation
                    | G::MathSymbol
                    | G::CurrencySymbol
                    | G::ModifierSymbol
                    | G::OtherSymbol
            );
        if plain {
            let mut buffer = [0_u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
        } else {
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out.push(b'"');
}

/// A double as Java's `Double.toString` writes it (Java 19 and later): the shortest digits
/// that read back as it, at least two; plain from 10⁻³ up to 10⁷ (`1234567.0`, `0.001`),
/// else `d.dddE<n>` (`1.0E7`, `1.0E-4`).
pub fn java_double(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    let magnitude = f.abs();
    // Shortest round-trip digits; with a single digit, Java takes the two-digit decimal
    // nearest the double (`4.9E-324`, not `5E-324`).
    let mut scientific = format!("{magnitude:e}");
    if !scientific.contains('.') {
        scientific = format!("{magnitude:.1e}");
    }
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    if (1e-3..1e7).contains(&magnitude) {
        if exponent >= 0 {
            let point = usize::try_from(exponent).unwrap_or_default() + 1;
            let whole = if digits.len() >= point {
                digits[..point].to_owned()
            } else {
                format!("{digits}{}", "0".repeat(point - digits.len()))
            };
            let fraction = digits.get(point..).filter(|f| !f.is_empty()).unwrap_or("0");
            format!("{sign}{whole}.{fraction}")
        } else {
            let zeros = "0".repeat(usize::try_from(-exponent - 1).unwrap_or_default());
            format!("{sign}0.{zeros}{digits}")
        }
    } else {
        let rest = digits.get(1..).filter(|r| !r.is_empty()).unwrap_or("0");
        format!("{sign}{}.{rest}E{exponent}", &digits[..1])
    }
}

/// `millis` since the epoch as Java's `DateTimeFormatter.ISO_DATE_TIME` writes an instant at
/// UTC: a year of at least four digits (`+` above 9999, `-` before year 0), seconds always,
/// the milliseconds without trailing zeros when there are any, then `Z`.
fn iso_date_time(out: &mut Vec<u8>, millis: i64) {
    let (days, of_day) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    // Days since 1970-01-01 → civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let _ = match year {
        y if y > 9999 => write!(out, "+{y}"),
        y if y < 0 => write!(out, "-{:04}", -y),
        y => write!(out, "{y:04}"),
    };
    let _ = write!(
        out,
        "-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60
    );
    let fraction = of_day % 1000;
    if fraction != 0 {
        let text = format!("{fraction:03}");
        let _ = write!(out, ".{}", text.trim_end_matches('0'));
    }
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use bson::spec::BinarySubtype;
    use bson::{doc, Binary, Bson, DateTime, RawDocumentBuf};

    use super::*;

    fn text_of(doc: &bson::Document, formatter: Formatter) -> String {
        let raw = RawDocumentBuf::from_document(doc).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8(to_vec(&raw, formatter).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn doubles_as_java_writes_them() {
        for (f, java) in [
            (1.5, "1.5"),
            (2.0, "2.0"),
            (1e300, "1.0E300"),
            (1.0e-7, "1.0E-7"),
            (1_234_567.0, "1234567.0"),
            (12_345_678.9, "1.23456789E7"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (9_999_999.0, "9999999.0"),
            (1e7, "1.0E7"),
            (123.456, "123.456"),
            (100.0, "100.0"),
            (5e-324, "4.9E-324"),
            (f64::MAX, "1.7976931348623157E308"),
            (2.0e-44, "2.0E-44"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-0.0, "-0.0"),
            (-2.5e-5, "-2.5E-5"),
        ] {
            assert_eq!(java_double(f), java, "{f:e}");
        }
    }

    #[test]
    fn dates_as_java_iso_date_time_writes_them() {
        for (millis, java) in [
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
            (1_700_000_000_120, "2023-11-14T22:13:20.12Z"),
            (1_700_000_000_100, "2023-11-14T22:13:20.1Z"),
            (1_700_000_040_000, "2023-11-14T22:14:00Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (-62_135_596_800_000, "0001-01-01T00:00:00Z"),
            (-62_135_596_800_001, "0000-12-31T23:59:59.999Z"),
            (-8_640_000_000_000_000, "-271821-04-20T00:00:00Z"),
            (8_640_000_000_000_000, "+275760-09-13T00:00:00Z"),
            (i64::MAX, "+292278994-08-17T07:12:55.807Z"),
            (i64::MIN, "-292275055-05-16T16:47:04.192Z"),
        ] {
            let mut out = Vec::new();
            iso_date_time(&mut out, millis);
            assert_eq!(String::from_utf8_lossy(&out), java, "{millis}");
        }
    }

    /// Characters of each Unicode category, keys included, as the Java driver 4.7.2 on Java
    /// 17 escaped them.
    #[test]
    fn characters_escaped_as_the_java_driver_does() {
        let doc = doc! {
            "k\u{301}": "\u{2b0}\u{903}\u{20dd}\u{2029}\u{200b}^_\u{378}\u{ffff}\u{a0}\u{3000}\u{2160}\u{bd}\u{ab}\u{bb}\u{20ac}\u{a9}\u{1c5}~`\u{0}\u{1f} \u{e9}\u{300}",
        };
        assert_eq!(
            text_of(&doc, Formatter::Extended),
            "{\"k\\u0301\": \"\\u02b0\\u0903\\u20dd\\u2029\\u200b^_\\u0378\\uffff\u{a0}\u{3000}\u{2160}\u{bd}\u{ab}\u{bb}\u{20ac}\u{a9}\u{1c5}~`\\u0000\\u001f \u{e9}\\u0300\"}"
        );
    }

    /// Decimals as the Java driver's `Decimal128.toString` writes them (4.7.2).
    #[test]
    fn decimals_as_java_writes_them() {
        for (text, java) in [
            ("0", "0"),
            ("-0", "-0"),
            ("0E+3", "0E+3"),
            ("0E-10", "0E-10"),
            ("1E-7", "1E-7"),
            ("1.000000", "1.000000"),
            (
                "123456789012345678901234567890123E+10",
                "1.23456789012345678901234567890123E+42",
            ),
            ("1E+6144", "1.000000000000000000000000000000000E+6144"),
            ("-1.5E-400", "-1.5E-400"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1E-7"),
            ("12345E-10", "0.0000012345"),
            ("1E3", "1E+3"),
        ] {
            let decimal: bson::Decimal128 = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            let doc = doc! {"d": decimal};
            assert_eq!(
                text_of(&doc, Formatter::Extended),
                format!("{{\"d\": {{\"$numberDecimal\": \"{java}\"}}}}"),
                "{text}"
            );
        }
    }

    /// What the MongoDB Java driver 4.7.2 (the connector 2.0.1's) wrote for this document
    /// with each formatter's settings (`BsonDocument.toJson`), including the types the MongoDB
    /// stand-in cannot store, which `tests/connector_json.rs` compares on a real server.
    #[test]
    fn the_java_drivers_text_for_every_type() {
        let dbpointer = Bson::try_from(serde_json::json!({
            "$dbPointer": {"$ref": "db.coll", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let doc = doc! {
            "_id": bson::oid::ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").unwrap_or_else(|e| panic!("{e}")),
            "nan": f64::NAN, "inf": f64::NEG_INFINITY,
            "s": "h\u{e9}\"llo\n\u{1}\u{7f}/\u{ad}\u{301}\u{2028}<\u{1F600}",
            "a": [1_i32, 2_i64, { "x": Bson::Null }],
            "bin": Binary { subtype: BinarySubtype::UserDefined(0xab), bytes: vec![7] },
            "undef": Bson::Undefined,
            "date": DateTime::from_millis(1_700_000_000_123),
            "re": bson::Regex { pattern: "^a\"".into(), options: "mi".into() },
            "dbp": dbpointer,
            "sym": Bson::Symbol("sym".into()),
            "cws": bson::JavaScriptCodeWithScope { code: "x + y".into(), scope: doc! { "x": 1 } },
            "i64": i64::MAX,
        };
        assert_eq!(
            text_of(&doc, Formatter::Default),
            r#"{"_id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}, "nan": NaN, "inf": -Infinity, "s": "hé\"llo\n\u0001\u007f/\u00ad\u0301\u2028<\ud83d\ude00", "a": [1, {"$numberLong": "2"}, {"x": null}], "bin": {"$binary": "Bw==", "$type": "AB"}, "undef": {"$undefined": true}, "date": {"$date": 1700000000123}, "re": {"$regex": "^a\"", "$options": "im"}, "dbp": {"$ref": "db.coll", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}, "sym": {"$symbol": "sym"}, "cws": {"$code": "x + y", "$scope": {"x": 1}}, "i64": {"$numberLong": "9223372036854775807"}}"#
        );
        assert_eq!(
            text_of(&doc, Formatter::Extended),
            r#"{"_id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}, "nan": {"$numberDouble": "NaN"}, "inf": {"$numberDouble": "-Infinity"}, "s": "hé\"llo\n\u0001\u007f/\u00ad\u0301\u2028<\ud83d\ude00", "a": [{"$numberInt": "1"}, {"$numberLong": "2"}, {"x": null}], "bin": {"$binary": {"base64": "Bw==", "subType": "AB"}}, "undef": {"$undefined": true}, "date": {"$date": {"$numberLong": "1700000000123"}}, "re": {"$regularExpression": {"pattern": "^a\"", "options": "im"}}, "dbp": {"$dbPointer": {"$ref": "db.coll", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}}, "sym": {"$symbol": "sym"}, "cws": {"$code": "x + y", "$scope": {"x": {"$numberInt": "1"}}}, "i64": {"$numberLong": "9223372036854775807"}}"#
        );
        assert_eq!(
            text_of(&doc, Formatter::Simplified),
            r#"{"_id": "64b7f0c2a1b2c3d4e5f60718", "nan": {"$numberDouble": "NaN"}, "inf": {"$numberDouble": "-Infinity"}, "s": "hé\"llo\n\u0001\u007f/\u00ad\u0301\u2028<\ud83d\ude00", "a": [1, 2, {"x": null}], "bin": "Bw==", "undef": {"$undefined": true}, "date": "2023-11-14T22:13:20.123Z", "re": {"$regularExpression": {"pattern": "^a\"", "options": "im"}}, "dbp": {"$ref": "db.coll", "$id": "64b7f0c2a1b2c3d4e5f60718"}, "sym": "sym", "cws": {"$code": "x + y", "$scope": {"x": 1}}, "i64": 9223372036854775807}"#
        );
    }
}
