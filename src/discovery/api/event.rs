//! Consul wire types for `/v1/event`: `UserEvent` as `event/fire` answers it
//! and `event/list` lists it (`Payload` base64 or `null`), and the index
//! Consul derives from an event's ID (`uuidToUint64`, the Go client's
//! `Event.IDToIndex`), and the event filters' regex dialect (Go's RE2
//! syntax, with Go's error texts), which the agent and the CLI both check.

use serde::{Deserialize, Serialize};

/// Consul's `UserEvent`, field order and spelling as Consul writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Base64 of the payload; `None` is Go's nil (`null`), an empty payload.
    #[serde(rename = "Payload", default)]
    pub payload: Option<String>,
    #[serde(
        rename = "NodeFilter",
        default,
        deserialize_with = "super::null_as_default"
    )]
    pub node_filter: String,
    #[serde(
        rename = "ServiceFilter",
        default,
        deserialize_with = "super::null_as_default"
    )]
    pub service_filter: String,
    #[serde(
        rename = "TagFilter",
        default,
        deserialize_with = "super::null_as_default"
    )]
    pub tag_filter: String,
    #[serde(rename = "Version", default)]
    pub version: u64,
    /// The Lamport time the event was gossiped at; 0 in `event/fire`'s answer.
    #[serde(rename = "LTime", default)]
    pub ltime: u64,
}

impl UserEvent {
    /// The payload's bytes (empty for `null` or undecodable base64).
    pub fn payload_bytes(&self) -> Vec<u8> {
        self.payload
            .as_deref()
            .and_then(|p| super::gofmt::base64_decode(p).ok())
            .unwrap_or_default()
    }
}

/// Consul's `uuidToUint64`: hex groups 1–3 as one `u64`, XOR groups 4–5 as
/// another. `event/list` answers it for its last event as `X-Consul-Index`,
/// and `consul watch -type event` prunes the list at the event whose ID gives
/// the previous index. 0 for a malformed ID (the Go client's `IDToIndex`).
pub fn id_to_index(id: &str) -> u64 {
    let (Some(a), Some(b), Some(c), Some(d), Some(e)) = (
        id.get(0..8),
        id.get(9..13),
        id.get(14..18),
        id.get(19..23),
        id.get(24..36),
    ) else {
        return 0;
    };
    let lower = u64::from_str_radix(&format!("{a}{b}{c}"), 16);
    let upper = u64::from_str_radix(&format!("{d}{e}"), 16);
    match (lower, upper) {
        (Ok(l), Ok(u)) => l ^ u,
        _ => 0,
    }
}

/// Compile a filter as Go's `regexp.Compile` would, with Go's error text
/// (`error parsing regexp: missing closing ]: `[a``) for the syntax errors
/// both grammars share (RE2's).
pub fn compile(re: &str) -> Result<regex::Regex, String> {
    use regex_syntax::ast::ErrorKind as K;
    if let Err(e) = regex_syntax::ast::parse::Parser::new().parse(re) {
        let span = e.span();
        let (start, end) = (span.start.offset, span.end.offset);
        let frag = |from: usize, to: usize| re.get(from..to).unwrap_or(re).to_string();
        let (code, expr) = match e.kind() {
            K::ClassUnclosed => ("missing closing ]", frag(start, re.len())),
            K::GroupUnclosed => ("missing closing )", re.to_string()),
            K::GroupUnopened => ("unexpected )", re.to_string()),
            K::RepetitionMissing => ("missing argument to repetition operator", frag(start, end)),
            K::RepetitionCountInvalid
            | K::RepetitionCountDecimalEmpty
            | K::RepetitionCountUnclosed => ("invalid repeat count", frag(start, end)),
            K::EscapeUnexpectedEof => ("trailing backslash at end of expression", String::new()),
            K::EscapeUnrecognized | K::EscapeHexEmpty | K::EscapeHexInvalid => {
                ("invalid escape sequence", frag(start, end))
            }
            K::ClassRangeInvalid => ("invalid character class range", frag(start, end)),
            K::GroupNameDuplicate { .. }
            | K::GroupNameEmpty
            | K::GroupNameInvalid
            | K::GroupNameUnexpectedEof => ("invalid named capture", frag(start, end)),
            _ => ("invalid or unsupported Perl syntax", frag(start, end)),
        };
        return Err(format!("error parsing regexp: {code}: `{expr}`"));
    }
    regex::Regex::new(re).map_err(|e| {
        let first = e.to_string();
        let detail = first
            .lines()
            .last()
            .unwrap_or("")
            .trim_start_matches("error: ");
        format!("error parsing regexp: {detail}: `{re}`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_of_an_id_is_consuls() {
        // consul-breadth.md §4.3's worked example.
        assert_eq!(
            id_to_index("b54fe110-7af5-cafc-d1fb-afc8ba432b1c"),
            7_256_511_592_453_824_992
        );
        assert_eq!(id_to_index("not-a-uuid"), 0);
        assert_eq!(id_to_index(""), 0);
    }

    #[test]
    fn an_event_reads_and_writes_consuls_shape() {
        let text = r#"{"ID":"b54fe110-7af5-cafc-d1fb-afc8ba432b1c","Name":"deploy","Payload":null,"NodeFilter":"","ServiceFilter":"","TagFilter":"","Version":1,"LTime":0}"#;
        let ev: UserEvent = serde_json::from_str(text).unwrap();
        assert_eq!(ev.name, "deploy");
        assert_eq!(ev.payload, None);
        assert_eq!(serde_json::to_string(&ev).unwrap(), text);
        let ev: UserEvent =
            serde_json::from_str(r#"{"ID":"x","Name":"n","Payload":"aGk=","NodeFilter":null}"#)
                .unwrap();
        assert_eq!(ev.payload_bytes(), b"hi");
    }
}
