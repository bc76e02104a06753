//! Relaxed and canonical extended JSON written straight from the raw BSON the driver
//! returns: no `Document`, no `serde_json::Value` tree in between, one output buffer per
//! record. The output is byte for byte what the `bson` crate writes for the same document
//! (`crate::source::format::relaxed` for relaxed JSON, `Bson::into_canonical_extjson` for
//! canonical JSON, both through `serde_json`), which `tests/proptest_conversions.rs` checks
//! over arbitrary documents. Strings, keys and numbers go through `serde_json`'s own
//! serializer, so escaping and float formatting are the crate's by construction.
//!
//! One difference, on input a `Document` cannot hold: a raw document with the same key twice
//! is written with both (a JSON reader keeps the last, the value the crate would write).

use std::io::Write;

use bson::{RawArray, RawBsonRef, RawDocument};
use serde::Serialize;

use crate::codec::base64::encode_into as base64;

/// Which extended JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Relaxed: numbers and dates as plain JSON where they fit.
    Relaxed,
    /// Canonical: every type spelled out, so it reads back exactly.
    Canonical,
}

/// Why raw BSON could not be written: it does not decode (a string that is not UTF-8, a
/// truncated element).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RawError(String);

impl From<bson::raw::Error> for RawError {
    fn from(e: bson::raw::Error) -> Self {
        Self(e.to_string())
    }
}

/// `doc` as extended JSON.
pub fn to_vec(doc: &RawDocument, mode: Mode) -> Result<Vec<u8>, RawError> {
    // Extended JSON is a little longer than the BSON it spells out.
    let mut out = Vec::with_capacity(doc.as_bytes().len() + doc.as_bytes().len() / 4 + 16);
    Writer {
        out: &mut out,
        mode,
    }
    .document(doc)?;
    Ok(out)
}

/// `{"_id": <value>}` as extended JSON: the key of an event whose key is not a document.
pub fn wrapped_id(value: RawBsonRef<'_>, mode: Mode) -> Result<Vec<u8>, RawError> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(b"{\"_id\":");
    Writer {
        out: &mut out,
        mode,
    }
    .value(value)?;
    out.push(b'}');
    Ok(out)
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    mode: Mode,
}

impl Writer<'_> {
    fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Anything `serde_json` serializes (strings, integers, floats), as it writes it.
    fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), RawError> {
        value
            .serialize(&mut serde_json::Serializer::new(&mut *self.out))
            .map_err(|e| RawError(e.to_string()))
    }

    /// `Display` text known to need no JSON escaping (digits, decimals, dates).
    fn display(&mut self, value: impl std::fmt::Display) {
        // Writing into a `Vec` cannot fail.
        let _ = write!(self.out, "{value}");
    }

    fn document(&mut self, doc: &RawDocument) -> Result<(), RawError> {
        self.out.push(b'{');
        let mut first = true;
        for element in doc.iter() {
            let (key, value) = element?;
            if !first {
                self.out.push(b',');
            }
            first = false;
            self.json(key)?;
            self.out.push(b':');
            self.value(value)?;
        }
        self.out.push(b'}');
        Ok(())
    }

    fn array(&mut self, array: &RawArray) -> Result<(), RawError> {
        self.out.push(b'[');
        let mut first = true;
        for value in array {
            if !first {
                self.out.push(b',');
            }
            first = false;
            self.value(value?)?;
        }
        self.out.push(b']');
        Ok(())
    }

    /// `{"<name>":"<text>"}` with `text` needing no escaping.
    fn wrapped_text(&mut self, name: &str, text: impl std::fmt::Display) {
        self.raw(b"{\"");
        self.raw(name.as_bytes());
        self.raw(b"\":\"");
        self.display(text);
        self.raw(b"\"}");
    }

    fn value(&mut self, value: RawBsonRef<'_>) -> Result<(), RawError> {
        let canonical = self.mode == Mode::Canonical;
        match value {
            RawBsonRef::Double(f) => self.double(f)?,
            RawBsonRef::String(s) => self.json(s)?,
            RawBsonRef::Array(array) => self.array(array)?,
            RawBsonRef::Document(doc) => self.document(doc)?,
            RawBsonRef::Boolean(b) => self.raw(if b { b"true" } else { b"false" }),
            RawBsonRef::Null => self.raw(b"null"),
            RawBsonRef::RegularExpression(regex) => {
                let mut options: Vec<char> = regex.options.chars().collect();
                options.sort_unstable();
                let options: String = options.into_iter().collect();
                self.raw(b"{\"$regularExpression\":{\"pattern\":");
                self.json(regex.pattern)?;
                self.raw(b",\"options\":");
                self.json(&options)?;
                self.raw(b"}}");
            }
            RawBsonRef::JavaScriptCode(code) => {
                self.raw(b"{\"$code\":");
                self.json(code)?;
                self.out.push(b'}');
            }
            RawBsonRef::JavaScriptCodeWithScope(with_scope) => {
                self.raw(b"{\"$code\":");
                self.json(with_scope.code)?;
                self.raw(b",\"$scope\":");
                self.document(with_scope.scope)?;
                self.out.push(b'}');
            }
            RawBsonRef::Int32(i) if canonical => self.wrapped_text("$numberInt", i),
            RawBsonRef::Int32(i) => self.display(i),
            RawBsonRef::Int64(i) if canonical => self.wrapped_text("$numberLong", i),
            RawBsonRef::Int64(i) => self.display(i),
            RawBsonRef::Timestamp(ts) => {
                self.raw(b"{\"$timestamp\":{\"t\":");
                self.display(ts.time);
                self.raw(b",\"i\":");
                self.display(ts.increment);
                self.raw(b"}}");
            }
            RawBsonRef::Binary(binary) => {
                self.raw(b"{\"$binary\":{\"base64\":\"");
                base64(self.out, binary.bytes);
                self.raw(b"\",\"subType\":\"");
                hex(self.out, &[u8::from(binary.subtype)]);
                self.raw(b"\"}}");
            }
            RawBsonRef::ObjectId(oid) => {
                self.raw(b"{\"$oid\":\"");
                hex(self.out, &oid.bytes());
                self.raw(b"\"}");
            }
            RawBsonRef::DateTime(date) => self.date(date),
            RawBsonRef::Symbol(s) => {
                self.raw(b"{\"$symbol\":");
                self.json(s)?;
                self.out.push(b'}');
            }
            RawBsonRef::Decimal128(d) => self.wrapped_text("$numberDecimal", d),
            RawBsonRef::Undefined => self.raw(b"{\"$undefined\":true}"),
            RawBsonRef::MaxKey => self.raw(b"{\"$maxKey\":1}"),
            RawBsonRef::MinKey => self.raw(b"{\"$minKey\":1}"),
            RawBsonRef::DbPointer(_) => {
                // Deprecated and rare, and its parts are private to the crate: the crate
                // writes it.
                let value = bson::Bson::try_from(value.to_raw_bson())?;
                self.json(&value.into_relaxed_extjson())?;
            }
        }
        Ok(())
    }

    fn double(&mut self, f: f64) -> Result<(), RawError> {
        if f.is_nan() {
            let text = if f.is_sign_negative() { "-NaN" } else { "NaN" };
            self.wrapped_text("$numberDouble", text);
        } else if f.is_infinite() {
            let text = if f.is_sign_negative() {
                "-Infinity"
            } else {
                "Infinity"
            };
            self.wrapped_text("$numberDouble", text);
        } else if self.mode == Mode::Canonical && f.is_normal() {
            // Rust's shortest round-trip text, as the crate writes it.
            self.raw(b"{\"$numberDouble\":\"");
            self.display(f);
            if f.fract() == 0.0 {
                self.raw(b".0");
            }
            self.raw(b"\"}");
        } else if self.mode == Mode::Canonical && f == 0.0 {
            let text = if f.is_sign_negative() { "-0.0" } else { "0.0" };
            self.wrapped_text("$numberDouble", text);
        } else {
            // Relaxed, and canonical subnormals (the crate writes those relaxed).
            self.json(&f)?;
        }
        Ok(())
    }

    fn date(&mut self, date: bson::DateTime) {
        /// 10000-01-01T00:00:00Z: relaxed JSON writes dates before it (from 1970) as text.
        const YEAR_10000_MILLIS: i64 = 253_402_300_800_000;
        let millis = date.timestamp_millis();
        if self.mode == Mode::Relaxed && (0..YEAR_10000_MILLIS).contains(&millis) {
            self.raw(b"{\"$date\":\"");
            rfc3339(self.out, millis);
            self.raw(b"\"}");
            return;
        }
        self.raw(b"{\"$date\":");
        self.wrapped_text("$numberLong", millis);
        self.out.push(b'}');
    }
}

/// `millis` (0 to the end of year 9999) as RFC 3339 in UTC, as the `time` crate writes it
/// for the `bson` crate: seconds always, then the milliseconds without trailing zeros when
/// there are any, then `Z`. Without the crate's allocation and general formatter, which
/// took a fifth of an event's time.
fn rfc3339(out: &mut Vec<u8>, millis: i64) {
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
    let digits = |out: &mut Vec<u8>, value: i64, width: u32| {
        for place in (0..width).rev() {
            let digit = (value / 10_i64.pow(place)) % 10;
            out.push(b'0' + u8::try_from(digit).unwrap_or_default());
        }
    };
    digits(out, year, 4);
    out.push(b'-');
    digits(out, month, 2);
    out.push(b'-');
    digits(out, day, 2);
    out.push(b'T');
    digits(out, of_day / 3_600_000, 2);
    out.push(b':');
    digits(out, of_day / 60_000 % 60, 2);
    out.push(b':');
    digits(out, of_day / 1000 % 60, 2);
    let mut fraction = of_day % 1000;
    if fraction != 0 {
        out.push(b'.');
        let mut width = 3;
        while fraction % 10 == 0 {
            fraction /= 10;
            width -= 1;
        }
        digits(out, fraction, width);
    }
    out.push(b'Z');
}

fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
}

#[cfg(test)]
mod tests {
    use bson::{doc, Bson, Document, RawDocumentBuf};

    use super::*;
    use crate::config::{KeyMode, OutputFormat};
    use crate::source::format::{self, Conversion, FormatError};

    fn raw(doc: &Document) -> RawDocumentBuf {
        RawDocumentBuf::from_document(doc).unwrap_or_else(|e| panic!("{e}"))
    }

    fn text(doc: &Document, mode: Mode) -> String {
        String::from_utf8(to_vec(&raw(doc), mode).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn crate_text(doc: &Document, mode: Mode) -> String {
        let value = match mode {
            Mode::Relaxed => format::relaxed(Bson::Document(doc.clone())),
            Mode::Canonical => Bson::Document(doc.clone()).into_canonical_extjson(),
        };
        value.to_string()
    }

    #[test]
    fn every_type_is_written_as_the_bson_crate_writes_it() {
        let doc = doc! {
            "_id": bson::oid::ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").unwrap_or_else(|e| panic!("{e}")),
            "double": 1.5, "integral": 2.0, "big": 1e300, "tiny": 5e-324, "zero": -0.0,
            "nan": f64::NAN, "inf": f64::NEG_INFINITY,
            "s": "h\u{e9}\"llo\n\u{1}\u{7f}/\u{1F600}",
            "a": [1_i32, 2_i64, { "x": Bson::Null }],
            "bin": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![0, 1, 2, 3, 255] },
            "bin2": bson::Binary { subtype: bson::spec::BinarySubtype::UserDefined(0x80), bytes: vec![7] },
            "undef": Bson::Undefined, "t": true, "f": false,
            "date": bson::DateTime::from_millis(1_700_000_000_123),
            "old": bson::DateTime::from_millis(-1),
            "far": bson::DateTime::MAX,
            "re": bson::Regex { pattern: "^a\"".into(), options: "mi".into() },
            "code": Bson::JavaScriptCode("f()".into()),
            "scope": bson::JavaScriptCodeWithScope { code: "x".into(), scope: doc! { "n": f64::NAN, "i": 1 } },
            "sym": Bson::Symbol("s".into()),
            "i32": i32::MIN, "i64": i64::MAX,
            "ts": bson::Timestamp { time: 1, increment: 2 },
            "dec": "1.10".parse::<bson::Decimal128>().unwrap_or_else(|e| panic!("{e}")),
            "min": Bson::MinKey, "max": Bson::MaxKey,
            "ptr": Bson::try_from(serde_json::json!({"$dbPointer": {"$ref": "db.c", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}})).unwrap_or_else(|e| panic!("{e}")),
        };
        for mode in [Mode::Relaxed, Mode::Canonical] {
            assert_eq!(text(&doc, mode), crate_text(&doc, mode), "{mode:?}");
        }
    }

    #[test]
    fn dates_are_written_as_the_bson_crate_writes_them() {
        let mut millis: Vec<i64> = vec![
            0,
            1,
            10,
            100,
            120,
            999,
            86_399_999,
            951_782_400_000,     // 2000-02-29
            4_107_542_400_000,   // 2100-02-28
            253_402_300_799_999, // 9999-12-31T23:59:59.999
        ];
        // Every day across 400 years' worth of leap rules, at varying times.
        let mut at = 0_i64;
        while at < 253_402_300_800_000 {
            millis.push(at);
            at += 86_400_000 * 37 + 3_723_456;
        }
        for ms in millis {
            let date = bson::DateTime::from_millis(ms);
            let mut out = Vec::new();
            rfc3339(&mut out, ms);
            assert_eq!(
                String::from_utf8(out).ok(),
                date.try_to_rfc3339_string().ok(),
                "{ms}"
            );
        }
    }

    #[test]
    fn base64_pads_like_the_standard() {
        for (bytes, expected) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\xfe\xfd", "//79"),
        ] {
            let mut out = Vec::new();
            base64(&mut out, bytes);
            assert_eq!(out, expected.as_bytes());
        }
    }

    #[test]
    fn a_string_that_is_not_utf8_is_a_decode_error() {
        let mut bytes = raw(&doc! { "s": "abc" }).into_bytes();
        let at = bytes
            .windows(3)
            .position(|w| w == b"abc")
            .unwrap_or_default();
        bytes[at + 2] = 0xff;
        let broken = RawDocumentBuf::from_bytes(bytes).unwrap_or_else(|e| panic!("{e}"));
        let conversion = Conversion {
            key: KeyMode::DocumentKey,
            format: OutputFormat::RelaxedJson,
            key_format: OutputFormat::RelaxedJson,
            full_document_only: false,
            tombstone_on_delete: false,
            registered: None,
        };
        assert!(matches!(
            conversion.convert_raw(&broken),
            Err(FormatError::Decode(_))
        ));
    }

    #[test]
    fn raw_conversion_matches_the_document_conversion() {
        let event = doc! {
            "_id": { "_data": "8264" },
            "operationType": "delete",
            "ns": { "db": "shop", "coll": "orders" },
            "documentKey": { "_id": 42_i64 },
        };
        let mut update = event.clone();
        update.insert("operationType", "update");
        update.insert("fullDocument", doc! { "_id": 42_i64, "n": 1.5 });
        let json = [OutputFormat::RelaxedJson, OutputFormat::CanonicalJson];
        // Every pair of key and value formats: a key in a format of its own too.
        for (format, key_format) in json.iter().flat_map(|v| json.iter().map(move |k| (*v, *k))) {
            for key in [KeyMode::DocumentKey, KeyMode::EventId] {
                for (full_document_only, tombstone_on_delete) in
                    [(false, false), (true, false), (true, true)]
                {
                    let conversion = Conversion {
                        key,
                        format,
                        key_format,
                        full_document_only,
                        tombstone_on_delete,
                        registered: None,
                    };
                    for e in [&event, &update] {
                        assert_eq!(
                            conversion.convert_raw(&raw(e)).ok(),
                            conversion.convert(e.clone()).ok(),
                            "{format:?} key {key_format:?} {key:?} {full_document_only} {tombstone_on_delete}"
                        );
                    }
                }
            }
        }
        // A key that is not a document is wrapped, as the document conversion does.
        let mut odd = event.clone();
        odd.insert("documentKey", 7);
        let conversion = Conversion {
            key: KeyMode::DocumentKey,
            format: OutputFormat::CanonicalJson,
            key_format: OutputFormat::CanonicalJson,
            full_document_only: false,
            tombstone_on_delete: false,
            registered: None,
        };
        assert_eq!(
            conversion.convert_raw(&raw(&odd)).ok(),
            conversion.convert(odd).ok()
        );
    }
}
