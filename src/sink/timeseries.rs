//! Time-series sinks (the MongoDB Kafka Connector's `timeseries.*`): the time field of each
//! document made a BSON date where asked, and the collection created as a time-series
//! collection when it does not exist yet.
//!
//! Rules, as the connector has them:
//! - with `timeseries_time_field_auto_convert`, a number is milliseconds since the epoch and
//!   text is parsed (RFC 3339, `YYYY-MM-DD[ T]HH:MM:SS[.fff]`, `YYYY-MM-DD`, or the configured
//!   format); a time without an offset is UTC, a date without a time of day is midnight; a
//!   date stays as it is; anything else, or a missing field, is a `process` error naming the
//!   field and the value;
//! - without it the field is left alone: MongoDB refuses a document whose time field is not a
//!   date (a `write` error);
//! - the collection is made with `create` (`timeseries: {timeField, metaField,
//!   granularity}`, `expireAfterSeconds`) before the first write to a namespace that does not
//!   exist; an existing collection is used as it is.

use bson::{doc, Bson, DateTime, Document};
use time::format_description::{well_known::Rfc3339, OwnedFormatItem};
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::model::{RecordError, Stage};
use super::namespace::Namespace;
use crate::config::SinkConfig;

/// The time-series settings of one topic.
#[derive(Debug, Clone)]
pub struct TimeSeries {
    time_field: String,
    auto_convert: bool,
    format: Option<OwnedFormatItem>,
    options: Document,
}

fn error(message: impl Into<String>) -> RecordError {
    RecordError::new(Stage::Process, message)
}

impl TimeSeries {
    /// The settings `config` asks for; `None` without `timeseries_time_field`. A format that
    /// does not parse is an error (validation reports it first, with its key).
    pub fn new(config: &SinkConfig) -> Result<Option<Self>, String> {
        let Some(time_field) = &config.timeseries_time_field else {
            return Ok(None);
        };
        let format = match &config.timeseries_time_field_format {
            Some(text) => Some(
                time::format_description::parse_owned::<2>(text)
                    .map_err(|e| format!("timeseries_time_field_format `{text}`: {e}"))?,
            ),
            None => None,
        };
        let mut timeseries = doc! {"timeField": time_field.as_str()};
        if let Some(meta) = &config.timeseries_meta_field {
            timeseries.insert("metaField", meta.as_str());
        }
        if let Some(granularity) = config.timeseries_granularity {
            timeseries.insert("granularity", granularity.as_str());
        }
        let mut options = doc! {"timeseries": timeseries};
        if let Some(expire) = config.timeseries_expire_after {
            options.insert(
                "expireAfterSeconds",
                i64::try_from(expire.as_secs()).unwrap_or(i64::MAX),
            );
        }
        Ok(Some(Self {
            time_field: time_field.clone(),
            auto_convert: config.timeseries_time_field_auto_convert,
            format,
            options,
        }))
    }

    /// The options of the `create` command that makes the collection.
    pub fn create_options(&self) -> &Document {
        &self.options
    }

    /// Makes the time field of `value` a date, when `auto_convert` asks for it.
    pub fn convert(&self, value: &mut Document) -> Result<(), RecordError> {
        if !self.auto_convert {
            return Ok(());
        }
        let field = &self.time_field;
        let date = match value.get(field) {
            None => {
                return Err(error(format!(
                    "the document has no time field `{field}` (timeseries_time_field)"
                )))
            }
            Some(Bson::DateTime(_)) => return Ok(()),
            Some(Bson::Int32(n)) => DateTime::from_millis(i64::from(*n)),
            Some(Bson::Int64(n)) => DateTime::from_millis(*n),
            Some(Bson::Double(n)) if n.is_finite() => {
                #[allow(clippy::cast_possible_truncation)] // whole milliseconds, as the connector
                DateTime::from_millis(n.trunc() as i64)
            }
            Some(Bson::String(text)) => self.parse(text).ok_or_else(|| {
                error(format!(
                    "time field `{field}`: `{text}` is not a time{}",
                    if self.format.is_some() {
                        " in timeseries_time_field_format"
                    } else {
                        " (RFC 3339, `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD`)"
                    }
                ))
            })?,
            Some(other) => {
                return Err(error(format!(
                    "time field `{field}` is {other}: only dates, numbers (epoch milliseconds) and text become dates"
                )))
            }
        };
        value.insert(field.clone(), date);
        Ok(())
    }

    fn parse(&self, text: &str) -> Option<DateTime> {
        let at = match &self.format {
            Some(format) => parse_with(text, format)?,
            None => parse_default(text)?,
        };
        let millis = at.unix_timestamp_nanos() / 1_000_000;
        Some(DateTime::from_millis(i64::try_from(millis).ok()?))
    }
}

/// RFC 3339, then the forms without an offset (UTC).
fn parse_default(text: &str) -> Option<OffsetDateTime> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(at);
    }
    const FORMATS: [&str; 4] = [
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]",
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]",
        "[year]-[month]-[day]T[hour]:[minute]:[second]",
        "[year]-[month]-[day] [hour]:[minute]:[second]",
    ];
    for format in FORMATS {
        let Ok(format) = time::format_description::parse_owned::<2>(format) else {
            continue;
        };
        if let Ok(at) = PrimitiveDateTime::parse(text, &format) {
            return Some(at.assume_utc());
        }
    }
    let date_only = time::format_description::parse_owned::<2>("[year]-[month]-[day]").ok()?;
    Date::parse(text, &date_only)
        .ok()
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc())
}

/// `format` with an offset, else as UTC, else a date at midnight UTC.
fn parse_with(text: &str, format: &OwnedFormatItem) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, format)
        .ok()
        .or_else(|| {
            PrimitiveDateTime::parse(text, format)
                .ok()
                .map(|at| at.assume_offset(UtcOffset::UTC))
        })
        .or_else(|| {
            Date::parse(text, format)
                .ok()
                .map(|d| d.with_time(Time::MIDNIGHT).assume_utc())
        })
}

/// Creates `namespace` as a time-series collection with `series`' options unless it exists;
/// answers whether it created it. A concurrent creation (another writer, another daemon) is
/// no error.
pub async fn ensure_collection(
    client: &mongodb::Client,
    namespace: &Namespace,
    series: &TimeSeries,
) -> Result<bool, mongodb::error::Error> {
    let db = client.database(&namespace.db);
    let existing = db
        .list_collection_names()
        .filter(doc! {"name": namespace.coll.as_str()})
        .await?;
    if !existing.is_empty() {
        return Ok(false);
    }
    let mut command = doc! {"create": namespace.coll.as_str()};
    command.extend(series.create_options().clone());
    match db.run_command(command).await {
        Ok(_) => Ok(true),
        // NamespaceExists: created meanwhile.
        Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 48) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(extra: &str) -> TimeSeries {
        let text = format!(
            "name = \"s\"\ntopics = [\"t\"]\ndatabase = \"db\"\ntimeseries_time_field = \"ts\"\n{extra}"
        );
        let config: SinkConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        TimeSeries::new(&config)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("a time field")
    }

    fn converted(extra: &str, ts: Bson) -> Result<Bson, RecordError> {
        let mut value = doc! {"ts": ts, "v": 1};
        series(extra).convert(&mut value)?;
        Ok(value.get("ts").cloned().unwrap_or(Bson::Null))
    }

    const AUTO: &str = "timeseries_time_field_auto_convert = true";
    /// 2024-03-01T12:30:45.250Z
    const MILLIS: i64 = 1_709_296_245_250;

    fn date(millis: i64) -> Bson {
        Bson::DateTime(DateTime::from_millis(millis))
    }

    #[test]
    fn numbers_are_epoch_milliseconds_and_dates_stay() {
        assert_eq!(
            converted(AUTO, Bson::Int64(MILLIS)).ok(),
            Some(date(MILLIS))
        );
        assert_eq!(converted(AUTO, Bson::Int32(1000)).ok(), Some(date(1000)));
        assert_eq!(
            converted(AUTO, Bson::Double(MILLIS as f64 + 0.7)).ok(),
            Some(date(MILLIS))
        );
        assert_eq!(converted(AUTO, date(5)).ok(), Some(date(5)));
    }

    #[test]
    fn text_in_the_default_forms_becomes_a_date() {
        for (text, millis) in [
            ("2024-03-01T12:30:45.250Z", MILLIS),
            ("2024-03-01T14:30:45.250+02:00", MILLIS),
            ("2024-03-01T12:30:45.25", MILLIS),
            ("2024-03-01 12:30:45.250", MILLIS),
            ("2024-03-01 12:30:45", MILLIS - 250),
            (
                "2024-03-01",
                MILLIS - 250 - 45_000 - 30 * 60_000 - 12 * 3_600_000,
            ),
        ] {
            assert_eq!(
                converted(AUTO, Bson::String(text.into())).ok(),
                Some(date(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn a_configured_format_reads_its_text() {
        let extra = format!(
            "{AUTO}\ntimeseries_time_field_format = \"[day]/[month]/[year] [hour]:[minute]\""
        );
        assert_eq!(
            converted(&extra, Bson::String("01/03/2024 12:30".into())).ok(),
            Some(date(MILLIS - 250 - 45_000))
        );
        let extra = format!("{AUTO}\ntimeseries_time_field_format = \"[day].[month].[year]\"");
        assert_eq!(
            converted(&extra, Bson::String("01.03.2024".into())).ok(),
            Some(date(1_709_251_200_000))
        );
        let err = converted(&extra, Bson::String("2024-03-01".into())).expect_err("other form");
        assert!(err.message.contains("`2024-03-01`"), "{err}");
    }

    #[test]
    fn what_is_no_time_is_refused_naming_the_field() {
        for bad in [
            Bson::String("yesterday".into()),
            Bson::Boolean(true),
            Bson::Double(f64::NAN),
        ] {
            let err = converted(AUTO, bad.clone()).expect_err("not a time");
            assert_eq!(err.stage, Stage::Process);
            assert!(err.message.contains("`ts`"), "{bad}: {err}");
        }
        let mut missing = doc! {"v": 1};
        let err = series(AUTO).convert(&mut missing).expect_err("missing");
        assert!(err.message.contains("no time field `ts`"), "{err}");
    }

    #[test]
    fn without_auto_convert_the_field_is_left_to_mongodb() {
        assert_eq!(
            converted("", Bson::String("yesterday".into())).ok(),
            Some(Bson::String("yesterday".into()))
        );
    }

    #[test]
    fn the_create_options_carry_every_setting() {
        assert_eq!(
            series("").create_options(),
            &doc! {"timeseries": {"timeField": "ts"}}
        );
        assert_eq!(
            series("timeseries_meta_field = \"sensor\"\ntimeseries_granularity = \"minutes\"\ntimeseries_expire_after = \"1day\"")
                .create_options(),
            &doc! {
                "timeseries": {"timeField": "ts", "metaField": "sensor", "granularity": "minutes"},
                "expireAfterSeconds": 86_400_i64,
            }
        );
    }
}
