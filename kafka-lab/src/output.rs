//! How `consume` prints a record: kcat-style `-f` format strings, and JSON
//! with keys, values and headers decoded the same way everywhere.

use base64::Engine;
use consumer_core::TopicPartition;
use kafka_wire::records::Record;

use crate::json::json_str;

/// Text if the bytes are UTF-8 without control characters (tabs and line
/// breaks allowed); `None` for binary.
fn as_text(b: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(b).ok()?;
    (!s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')))
    .then_some(s)
}

/// The number in a `kafka_dlt-*` provenance header (Spring's encoding:
/// big-endian 4-byte partition/attempts, 8-byte offset/timestamp).
fn dlt_number(key: &str, v: &[u8]) -> Option<i64> {
    if !key.starts_with("kafka_dlt-") && !key.starts_with("retry_topic-") {
        return None;
    }
    match v.len() {
        4 => Some(i32::from_be_bytes(v.try_into().ok()?).into()),
        8 => Some(i64::from_be_bytes(v.try_into().ok()?)),
        _ => None,
    }
}

fn base64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// JSON for a key, value or header value: a string when it is text,
/// `{"base64": "..."}` when it is binary, `null` when absent.
fn bytes_json(b: Option<&[u8]>) -> String {
    match b {
        None => "null".into(),
        Some(b) => match as_text(b) {
            Some(s) => json_str(s),
            None => format!("{{\"base64\":\"{}\"}}", base64(b)),
        },
    }
}

/// Text for `-f`: as is when text, `base64:...` when binary, empty when absent.
fn bytes_text(b: Option<&[u8]>) -> String {
    match b {
        None => String::new(),
        Some(b) => match as_text(b) {
            Some(s) => s.to_string(),
            None => format!("base64:{}", base64(b)),
        },
    }
}

/// Bytes as one line of text (`dlt tail`): as [`bytes_text`] prints them
/// (binary, and text with control characters such as a terminal escape,
/// as `base64:…`), with line breaks and tabs written `\n`, `\r`, `\t` so
/// the bytes cannot start a line of their own.
pub(crate) fn one_line(b: &[u8]) -> String {
    let text = bytes_text(Some(b));
    if !text.contains(['\n', '\r', '\t']) {
        return text;
    }
    text.replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t")
}

/// One JSON object: topic, partition, offset, timestamp, key, value, and
/// headers as an object (a `kafka_dlt-*` number as a JSON number).
pub fn json(tp: &TopicPartition, r: &Record) -> String {
    let headers: Vec<String> = r
        .headers
        .iter()
        .map(|h| {
            let key = h.key_str();
            let value = match h.value.as_deref().and_then(|v| dlt_number(&key, v)) {
                Some(n) => n.to_string(),
                None => bytes_json(h.value.as_deref()),
            };
            format!("{}:{value}", json_str(&key))
        })
        .collect();
    format!(
        "{{\"topic\":{},\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":{},\"value\":{},\"headers\":{{{}}}}}",
        json_str(&tp.topic),
        tp.partition,
        r.offset,
        r.timestamp,
        bytes_json(r.key.as_deref()),
        bytes_json(r.value.as_deref()),
        headers.join(",")
    )
}

/// A kcat-style format: `%t` topic, `%p` partition, `%o` offset, `%T`
/// timestamp (ms), `%k` key, `%s` value, `%S` value size, `%K` key size,
/// `%h` headers (`k=v,k2=v2`), `%%` a percent sign; `\n`, `\t`, `\r`
/// escapes. Binary bytes print as `base64:…`.
pub fn format(fmt: &str, tp: &TopicPartition, r: &Record) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => out.push_str(&tp.topic),
                Some('p') => out.push_str(&tp.partition.to_string()),
                Some('o') => out.push_str(&r.offset.to_string()),
                Some('T') => out.push_str(&r.timestamp.to_string()),
                Some('k') => out.push_str(&bytes_text(r.key.as_deref())),
                Some('s') => out.push_str(&bytes_text(r.value.as_deref())),
                Some('S') => {
                    out.push_str(&r.value.as_ref().map_or(-1, |v| v.len() as i64).to_string())
                }
                Some('K') => {
                    out.push_str(&r.key.as_ref().map_or(-1, |v| v.len() as i64).to_string())
                }
                Some('h') => {
                    let hs: Vec<String> = r
                        .headers
                        .iter()
                        .map(|h| {
                            let key = h.key_str();
                            let v = match h.value.as_deref().and_then(|v| dlt_number(&key, v)) {
                                Some(n) => n.to_string(),
                                None => bytes_text(h.value.as_deref()),
                            };
                            format!("{key}={v}")
                        })
                        .collect();
                    out.push_str(&hs.join(","));
                }
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// The plain format: `topic-partition<TAB>offset<TAB>[key<TAB>][headers<TAB>]value`.
pub fn plain_format(print_key: bool, print_headers: bool) -> String {
    let mut f = String::from("%t-%p\\t%o\\t");
    if print_key {
        f.push_str("%k\\t");
    }
    if print_headers {
        f.push_str("%h\\t");
    }
    f.push_str("%s\\n");
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_wire::records::Header;

    fn record() -> Record {
        Record {
            offset: 7,
            timestamp: 1000,
            key: Some(Bytes::from_static(b"k1")),
            value: Some(Bytes::from_static(b"hello")),
            headers: vec![
                Header {
                    key: Bytes::from_static(b"src"),
                    value: Some(Bytes::from_static(b"cli")),
                },
                Header {
                    key: Bytes::from_static(b"kafka_dlt-original-offset"),
                    value: Some(Bytes::copy_from_slice(&42i64.to_be_bytes())),
                },
                Header {
                    key: Bytes::from_static(b"bin"),
                    value: Some(Bytes::from_static(&[0, 1, 2, 0xff])),
                },
            ],
        }
    }

    #[test]
    fn kcat_format_strings() {
        let tp = TopicPartition::new("t", 3);
        assert_eq!(
            format("%t/%p@%o %k=%s (%S bytes) [%h]\\n", &tp, &record()),
            "t/3@7 k1=hello (5 bytes) [src=cli,kafka_dlt-original-offset=42,bin=base64:AAEC/w==]\n"
        );
    }

    #[test]
    fn json_marks_binary_and_reads_dlt_numbers() {
        let j = json(&TopicPartition::new("t", 0), &record());
        assert!(j.contains("\"src\":\"cli\""), "{j}");
        assert!(j.contains("\"kafka_dlt-original-offset\":42"), "{j}");
        assert!(j.contains("\"bin\":{\"base64\":\"AAEC/w==\"}"), "{j}");
        assert!(j.contains("\"key\":\"k1\""), "{j}");
    }
}
