//! One release record as helm stores it, and what bgslot decodes of it. `data.release` is base64
//! of gzip of the release as JSON (records written before helm compressed them are plain JSON
//! under the base64; helm still reads those, and so does this module).
//!
//! Only what bgslot needs is decoded ([`Record`]); every other field is ignored, so records of
//! Helm 3 and Helm 4 (which adds `apply_method`, the chart's `modtime`, and drops zero times)
//! decode alike. [`Record::revision`] and [`Record::status`] give the shapes of
//! `helm history -o json` and `helm status -o json` that the rest of bgslot reads, with the same
//! strings helm prints: times as Go's RFC 3339 with nanoseconds, numbers as Go's `float64` reads
//! them. Pure: finding the records is `storage`.

use std::io::Read;

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Deserializer};
use serde_json::{Number, Value};

use super::json::{Revision, Status, StatusInfo};

/// What is wrong with a record's payload.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("it has no data.release")]
    NoPayload,
    #[error("data.release is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("data.release is not gzip: {0}")]
    Gzip(#[from] std::io::Error),
    #[error("the release is not JSON helm writes: {0}")]
    Json(#[from] serde_json::Error),
}

/// A time as helm prints it: Go's RFC 3339 with nanoseconds (trailing zeros dropped) and the
/// zone offset the writing helm ran in (`Z` for UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmTime {
    text: String,
    at: Timestamp,
}

impl HelmTime {
    /// Reads a time helm stored; `None` for text that is not RFC 3339.
    pub fn parse(text: &str) -> Option<HelmTime> {
        let at: Timestamp = text.parse().ok()?;
        Some(HelmTime {
            text: go_rfc3339(text)?,
            at,
        })
    }

    pub fn timestamp(&self) -> Timestamp {
        self.at
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for HelmTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for HelmTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// The RFC 3339 text `text` as Go prints the time it parses from it (`time.RFC3339Nano`):
/// fractional seconds without trailing zeros, `Z` for a zero offset.
fn go_rfc3339(text: &str) -> Option<String> {
    let (date, time) = text.split_once(['T', 't'])?;
    let zone_at = time.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = time.split_at(zone_at);
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, fraction)) => (hms, fraction.trim_end_matches('0')),
        None => (clock, ""),
    };
    let zone = match zone {
        "Z" | "z" | "+00:00" | "-00:00" => "Z",
        other => other,
    };
    let dot = if fraction.is_empty() { "" } else { "." };
    Some(format!("{date}T{hms}{dot}{fraction}{zone}"))
}

/// Helm 3 stores a zero time as `""` (and Helm 4 omits it); both mean "never".
fn helm_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HelmTime>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => HelmTime::parse(text)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}"))),
    }
}

/// Values as helm holds them after reading a record: Go decodes every JSON number into a
/// `float64`, so an integer beyond 2^53 comes back rounded, and helm prints that.
fn go_numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    let value: Option<Value> = Option::deserialize(d)?;
    Ok(value.map(as_go_reads))
}

/// `value` with every number as Go's `encoding/json` decodes and re-encodes it (through
/// `float64`), and as serde_json then reads helm's output.
pub fn as_go_reads(value: Value) -> Value {
    match value {
        Value::Number(n) => Value::Number(go_number(&n)),
        Value::Array(items) => Value::Array(items.into_iter().map(as_go_reads).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, as_go_reads(v))).collect())
        }
        other => other,
    }
}

fn go_number(n: &Number) -> Number {
    const EXACT: u64 = 1 << 53;
    if n.as_u64().is_some_and(|u| u <= EXACT)
        || n.as_i64().is_some_and(|i| i.unsigned_abs() <= EXACT)
    {
        return n.clone();
    }
    let Some(f) = n.as_f64() else {
        return n.clone();
    };
    // Go prints a float64 below 1e21 without an exponent: an integral one as plain digits,
    // which serde_json reads back as an integer when it fits one.
    if f.fract() == 0.0 && f.abs() < 1e21 {
        if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
            return Number::from(f as u64);
        }
        if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
            return Number::from(f as i64);
        }
    }
    Number::from_f64(f).unwrap_or_else(|| n.clone())
}

/// The release JSON inside a record's `data.release`, as helm's `decodeRelease` unpacks it:
/// base64 (line breaks skipped, as Go's decoder does), then gzip when the gzip magic is there
/// (records from before helm compressed them are plain JSON).
pub fn unpack(payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let text: Vec<u8> = payload
        .iter()
        .copied()
        .filter(|b| *b != b'\n' && *b != b'\r')
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    if bytes.len() > 3 && bytes[..3] == [0x1f, 0x8b, 0x08] {
        let mut json = Vec::with_capacity(bytes.len() * 4);
        // Go's gzip reader reads concatenated members; so does MultiGzDecoder.
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut json)?;
        Ok(json)
    } else {
        Ok(bytes)
    }
}

/// One release record as helm stored it: the parts bgslot reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Record {
    pub name: String,
    pub namespace: String,
    /// The revision number.
    pub version: u64,
    pub info: Info,
    pub chart: Option<Chart>,
    /// The values the user supplied (what `helm get values` prints); `None` when there are none.
    #[serde(deserialize_with = "go_numbers")]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Info {
    #[serde(deserialize_with = "helm_time")]
    pub first_deployed: Option<HelmTime>,
    #[serde(deserialize_with = "helm_time")]
    pub last_deployed: Option<HelmTime>,
    #[serde(deserialize_with = "helm_time")]
    pub deleted: Option<HelmTime>,
    pub description: String,
    /// `deployed`, `superseded`, `failed`, `uninstalled`, `uninstalling`, `pending-install`,
    /// `pending-upgrade`, `pending-rollback`, `unknown`.
    pub status: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Chart {
    pub metadata: Option<ChartMetadata>,
    /// The chart's default values (its values.yaml).
    #[serde(deserialize_with = "go_numbers")]
    pub values: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ChartMetadata {
    pub name: String,
    pub version: String,
    #[serde(rename = "appVersion")]
    pub app_version: String,
}

/// What helm prints for a record whose chart is missing (helm/helm#1347).
const MISSING: &str = "MISSING";

impl Record {
    /// Decodes `data.release` of a record: base64 of gzip of JSON (or of JSON, for records written
    /// before helm compressed them).
    pub fn decode(payload: &[u8]) -> Result<Record, DecodeError> {
        Ok(serde_json::from_slice(&unpack(payload)?)?)
    }

    /// The chart as `helm history` names it: `NAME-VERSION`.
    pub fn chart_name(&self) -> String {
        match self.chart.as_ref().and_then(|c| c.metadata.as_ref()) {
            Some(m) => format!("{}-{}", m.name, m.version),
            None => MISSING.to_string(),
        }
    }

    /// The chart's appVersion as `helm history` prints it.
    pub fn app_version(&self) -> String {
        match self.chart.as_ref().and_then(|c| c.metadata.as_ref()) {
            Some(m) => m.app_version.clone(),
            None => MISSING.to_string(),
        }
    }

    /// The chart's default values; `None` when the record has no chart or the chart no values.
    pub fn chart_values(&self) -> Option<&Value> {
        self.chart
            .as_ref()
            .and_then(|c| c.values.as_ref())
            .filter(|v| !v.is_null())
    }

    /// The values the user supplied, `{}` when none (as `helm get values -o json` prints them).
    pub fn user_values(&self) -> Value {
        self.config
            .clone()
            .filter(|v| !v.is_null())
            .unwrap_or_else(|| Value::Object(Default::default()))
    }

    /// `last_deployed` as helm prints it (`""` when the record has none).
    pub fn updated(&self) -> String {
        self.info
            .last_deployed
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    /// This revision as one entry of `helm history -o json`.
    pub fn revision(&self) -> Revision {
        Revision {
            revision: self.version,
            updated: self.updated(),
            status: self.info.status.clone(),
            chart: self.chart_name(),
            app_version: self.app_version(),
            description: self.info.description.clone(),
        }
    }

    /// This revision as `helm status -o json` gives it (helm omits empty user values).
    pub fn status(&self) -> Status {
        Status {
            version: self.version,
            info: StatusInfo {
                status: self.info.status.clone(),
                description: self.info.description.clone(),
                last_deployed: self.updated(),
            },
            config: self
                .config
                .clone()
                .filter(|v| !v.is_null() && v.as_object().is_none_or(|m| !m.is_empty())),
        }
    }
}

/// The newest of `records` (the highest revision), as helm's `status` picks it.
pub fn newest(records: Vec<Record>) -> Option<Record> {
    records.into_iter().max_by_key(|r| r.version)
}

/// `helm history --max MAX -o json` of `records`: the `max` newest revisions, oldest first.
pub fn history_of(mut records: Vec<Record>, max: usize) -> Vec<Revision> {
    records.sort_by_key(|r| std::cmp::Reverse(r.version));
    records.truncate(max);
    records.iter().rev().map(Record::revision).collect()
}

/// Records as helm writes them, for the tests of this module and of `storage`.
#[cfg(test)]
pub(crate) mod test_payloads {
    use base64::Engine;
    use serde_json::{json, Value};
    use std::io::Write;

    pub fn gzip(json: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(json).unwrap();
        gz.finish().unwrap()
    }

    /// `data.release` as helm writes it: base64 of gzip of JSON.
    pub fn payload(release: &Value) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(gzip(release.to_string().as_bytes()))
            .into_bytes()
    }

    pub fn release(version: u64, status: &str) -> Value {
        json!({
            "name": "web",
            "namespace": "shop",
            "version": version,
            "info": {
                "first_deployed": "2025-03-01T10:00:00.123456789Z",
                "last_deployed": format!("2025-03-{version:02}T10:00:00.5+01:00"),
                "deleted": "",
                "description": format!("Upgrade {version}"),
                "status": status,
                "notes": "ignored"
            },
            "chart": {
                "metadata": {"name": "bgslot", "version": "0.2.0", "appVersion": "1.0", "apiVersion": "v2"},
                "templates": [{"name": "templates/x.yaml", "data": "eA=="}],
                "values": {"replicaCount": 1, "image": {"tag": ""}},
                "schema": null,
                "files": []
            },
            "config": {"blue": {"image": {"tag": "v1"}}},
            "manifest": "---\n",
            "apply_method": "ssa"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::test_payloads::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_what_bgslot_reads_and_ignores_the_rest() {
        let record = Record::decode(&payload(&release(2, "deployed"))).unwrap();
        assert_eq!(record.name, "web");
        assert_eq!(record.namespace, "shop");
        assert_eq!(record.version, 2);
        assert_eq!(record.info.status, "deployed");
        assert_eq!(record.info.description, "Upgrade 2");
        assert_eq!(record.info.deleted, None);
        assert_eq!(
            record.info.first_deployed.as_ref().unwrap().as_str(),
            "2025-03-01T10:00:00.123456789Z"
        );
        assert_eq!(record.chart_name(), "bgslot-0.2.0");
        assert_eq!(record.app_version(), "1.0");
        assert_eq!(
            record.chart_values(),
            Some(&json!({"replicaCount": 1, "image": {"tag": ""}}))
        );
        assert_eq!(
            record.user_values(),
            json!({"blue": {"image": {"tag": "v1"}}})
        );
    }

    #[test]
    fn converts_to_history_and_status_as_helm_prints_them() {
        let record = Record::decode(&payload(&release(3, "failed"))).unwrap();
        assert_eq!(
            record.revision(),
            Revision {
                revision: 3,
                updated: "2025-03-03T10:00:00.5+01:00".into(),
                status: "failed".into(),
                chart: "bgslot-0.2.0".into(),
                app_version: "1.0".into(),
                description: "Upgrade 3".into(),
            }
        );
        let status: Status = serde_json::from_value(json!({
            "name": "web", "version": 3, "namespace": "shop",
            "info": {"last_deployed": "2025-03-03T10:00:00.5+01:00", "status": "failed",
                     "description": "Upgrade 3", "first_deployed": "2025-03-01T10:00:00.123456789Z"},
            "config": {"blue": {"image": {"tag": "v1"}}}
        }))
        .unwrap();
        assert_eq!(record.status(), status);
    }

    #[test]
    fn empty_user_values_are_omitted_like_helm_status_does() {
        for config in [json!({}), Value::Null] {
            let mut r = release(1, "deployed");
            r["config"] = config;
            let record = Record::decode(&payload(&r)).unwrap();
            assert_eq!(record.status().config, None);
            assert_eq!(record.user_values(), json!({}));
        }
        let mut r = release(1, "deployed");
        r.as_object_mut().unwrap().remove("config");
        assert_eq!(Record::decode(&payload(&r)).unwrap().status().config, None);
    }

    #[test]
    fn a_record_without_a_chart_reads_as_helm_shows_it() {
        let mut r = release(1, "deployed");
        r.as_object_mut().unwrap().remove("chart");
        let record = Record::decode(&payload(&r)).unwrap();
        assert_eq!(
            (record.chart_name().as_str(), record.app_version().as_str()),
            ("MISSING", "MISSING")
        );
        assert_eq!(record.chart_values(), None);
    }

    #[test]
    fn times_print_as_go_prints_them() {
        for (stored, printed) in [
            (
                "2025-06-01T08:09:10.123456789Z",
                "2025-06-01T08:09:10.123456789Z",
            ),
            ("2025-06-01T08:09:10.120000000Z", "2025-06-01T08:09:10.12Z"),
            ("2025-06-01T08:09:10.000Z", "2025-06-01T08:09:10Z"),
            ("2025-06-01T08:09:10Z", "2025-06-01T08:09:10Z"),
            ("2025-06-01T08:09:10.5+00:00", "2025-06-01T08:09:10.5Z"),
            (
                "2025-06-01T10:09:10.000000001+02:00",
                "2025-06-01T10:09:10.000000001+02:00",
            ),
            ("2025-06-01T03:39:10-04:30", "2025-06-01T03:39:10-04:30"),
        ] {
            let t = HelmTime::parse(stored).unwrap();
            assert_eq!(t.as_str(), printed, "{stored}");
            assert_eq!(t.timestamp(), stored.parse::<Timestamp>().unwrap());
        }
        assert_eq!(HelmTime::parse("yesterday"), None);
        // Helm 3 writes a zero time as "", Helm 4 leaves it out; neither is a time.
        let mut r = release(1, "deployed");
        r["info"]["last_deployed"] = json!("");
        r["info"].as_object_mut().unwrap().remove("first_deployed");
        let record = Record::decode(&payload(&r)).unwrap();
        assert_eq!(
            (&record.info.last_deployed, &record.info.first_deployed),
            (&None, &None)
        );
        assert_eq!(record.revision().updated, "");
        let mut r = release(1, "deployed");
        r["info"]["last_deployed"] = json!("not a time");
        assert!(matches!(
            Record::decode(&payload(&r)),
            Err(DecodeError::Json(_))
        ));
    }

    #[test]
    fn numbers_are_what_go_float64_makes_of_them() {
        let values = json!({
            "small": 3, "negative": -7, "float": 1.5, "exact": 9007199254740992u64,
            "big": 12345678901234567u64, "bigger": -12345678901234567i64,
            "huge": 18446744073709551615u64, "list": [9007199254740993u64]
        });
        assert_eq!(
            as_go_reads(values),
            json!({
                "small": 3, "negative": -7, "float": 1.5, "exact": 9007199254740992u64,
                "big": 12345678901234568u64, "bigger": -12345678901234568i64,
                "huge": 18446744073709551615.0, "list": [9007199254740992u64]
            })
        );
    }

    #[test]
    fn uncompressed_records_and_line_breaks_decode_as_helm_reads_them() {
        let json = release(1, "deployed").to_string();
        let plain = base64::engine::general_purpose::STANDARD.encode(json.as_bytes());
        assert_eq!(Record::decode(plain.as_bytes()).unwrap().version, 1);
        let wrapped: Vec<u8> = payload(&release(1, "deployed"))
            .chunks(76)
            .flat_map(|c| c.iter().copied().chain(*b"\r\n"))
            .collect();
        assert_eq!(Record::decode(&wrapped).unwrap().version, 1);
    }

    #[test]
    fn latest_is_the_highest_revision_and_history_the_newest_oldest_first() {
        let records: Vec<Record> = [
            (2, "superseded"),
            (10, "deployed"),
            (1, "superseded"),
            (9, "superseded"),
        ]
        .into_iter()
        .map(|(v, s)| Record::decode(&payload(&release(v, s))).unwrap())
        .collect();
        assert_eq!(newest(records.clone()).unwrap().version, 10);
        assert_eq!(newest(vec![]), None);
        let history = history_of(records.clone(), 3);
        assert_eq!(
            history.iter().map(|r| r.revision).collect::<Vec<_>>(),
            [2, 9, 10]
        );
        assert_eq!(history_of(records, 50).len(), 4);
    }
}
