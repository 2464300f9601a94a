//! Turning the bytes of one received event into something the responder can decide on.
//! Pure: no I/O. Every failure is a typed, readable error; nothing here panics on bad input.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde_json::Value;

use crate::finding::{Finding, GUARDDUTY_DETAIL_TYPE, GUARDDUTY_SOURCE};

/// The EventBridge envelope, as the Rust Lambda ecosystem types it; `detail` stays JSON until
/// `source` and `detail-type` say what it is.
type Envelope = EventBridgeEvent<Option<Value>>;
use crate::incident::{Incident, IncidentError};

/// EventBridge and Lambda's asynchronous payloads cap an event at 1 MB (256 KiB before 2026);
/// anything larger is not an event we were sent.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// A file of many events (pages of `get-findings`, a log export) may be larger; each event in
/// it is still held to [`MAX_EVENT_BYTES`].
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// Longest excerpt of input echoed back in an error, so a huge string cannot flood a log.
const MAX_ERROR_CHARS: usize = 300;

/// One received event, understood.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A GuardDuty finding, normalised. `raw` is the finding JSON as received (kept as
    /// evidence).
    Finding {
        /// The finding, normalised.
        incident: Box<Incident>,
        /// The finding JSON as received.
        raw: RawFinding,
    },
    /// An ECS "Task State Change" event: when a quarantined task stops, its network ACL
    /// entries must go (the next task given the same IP would otherwise be blocked).
    TaskStateChange(TaskStateChange),
    /// The stack's scheduled sweep for quarantine entries left behind; `approvals_only`: the
    /// frequent schedule that only expires containment approvals nobody gave in time.
    Sweep {
        /// Only expire approvals (no ACL sweep).
        approvals_only: bool,
    },
    /// A well-formed EventBridge event that is not a GuardDuty finding.
    Foreign {
        /// The event's `source`.
        source: Option<String>,
        /// The event's `detail-type`.
        detail_type: Option<String>,
    },
}

/// The finding as received, kept as evidence.
#[derive(Debug, Clone, PartialEq)]
pub enum RawFinding {
    /// Read into a JSON value already.
    Value(Value),
    /// The `detail` of this EventBridge event, which is the finding as sent: read into a value
    /// only when evidence is written, so deciding never pays for it.
    EventDetail(Box<[u8]>),
}

impl RawFinding {
    /// The finding as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            RawFinding::Value(value) => value.clone(),
            // Read once already as JSON a value holds, an event with a `detail` object: cannot
            // fail.
            RawFinding::EventDetail(event) => serde_json::from_slice::<Value>(event)
                .ok()
                .and_then(|mut event| event.get_mut("detail").map(Value::take))
                .unwrap_or_default(),
        }
    }
}

/// The fields of an ECS Task State Change event this responder uses.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStateChange {
    /// The task's ARN.
    pub task_arn: String,
    /// The cluster's ARN.
    #[serde(default)]
    pub cluster_arn: Option<String>,
    /// The task's last known status (e.g. `RUNNING`, `STOPPED`).
    #[serde(default)]
    pub last_status: Option<String>,
    /// The status ECS wants the task in.
    #[serde(default)]
    pub desired_status: Option<String>,
    /// Why the task stopped, when it has.
    #[serde(default)]
    pub stopped_reason: Option<String>,
    /// ECS's stop code (e.g. `EssentialContainerExited`), when it has stopped.
    #[serde(default)]
    pub stop_code: Option<String>,
    /// The task's group (`service:NAME` for a service's task).
    #[serde(default)]
    pub group: Option<String>,
    /// Its containers, as the event lists them.
    #[serde(default)]
    pub containers: Vec<ContainerState>,
}

/// A container in a Task State Change event.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// The container's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The image reference it was started from.
    #[serde(default)]
    pub image: Option<String>,
    /// The image's digest, when ECS reports it.
    #[serde(default)]
    pub image_digest: Option<String>,
}

/// `source` of the stack's own scheduled events (a custom source: never `aws.*`).
pub const RESPONDER_SOURCE: &str = "incident-responder";
/// `detail-type` of the scheduled sweep.
pub const SWEEP: &str = "Sweep quarantine entries";
/// `detail-type` of the schedule that expires containment approvals nobody gave in time.
pub const EXPIRE_APPROVALS: &str = "Expire approvals";

/// `source` of ECS events on EventBridge.
pub const ECS_SOURCE: &str = "aws.ecs";
/// `detail-type` of ECS task state change events on EventBridge.
pub const TASK_STATE_CHANGE: &str = "ECS Task State Change";

/// The shapes an input may have, for the message when it has none of them.
pub const ACCEPTED_SHAPES: &str = "an EventBridge event (with `source`, `detail-type` and `detail`), a GuardDuty finding (its `detail`, with `schemaVersion`, `type` and `resource`), `aws guardduty get-findings` output (`{\"Findings\": [...]}`, the CLI's PascalCase names), or several of those in a JSON array or one after another (JSON Lines)";

/// Why an event could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The input holds nothing but white space.
    #[error("the input is empty: expected {ACCEPTED_SHAPES}")]
    Empty,
    /// The input could not be read.
    #[error("cannot read the event: {0}")]
    Unreadable(String),
    /// A file is larger than `MAX_INPUT_BYTES` (its size in bytes).
    #[error("the input is {0} bytes; split it into files of at most 64 MiB")]
    InputTooLarge(usize),
    /// The event is larger than `MAX_EVENT_BYTES` (its size in bytes).
    #[error("the event is {0} bytes; EventBridge events are at most 1 MB")]
    TooLarge(usize),
    /// The input is not valid JSON.
    #[error("the event is not valid JSON (line {line}, column {column}): {message}")]
    Json {
        /// The line of the error (1-based).
        line: usize,
        /// The column of the error (1-based).
        column: usize,
        /// The parser's message, clipped.
        message: String,
    },
    /// The JSON is not an object.
    #[error("the event is JSON but not an object: expected {ACCEPTED_SHAPES}")]
    NotAnObject,
    /// The EventBridge envelope is malformed.
    #[error("the EventBridge event is malformed: {0}")]
    Envelope(String),
    /// A JSON object that is neither an EventBridge event nor a GuardDuty finding.
    #[error("the JSON object is neither an EventBridge event nor a GuardDuty finding (it has no `detail-type`, nor `schemaVersion` and `type`): expected {ACCEPTED_SHAPES}")]
    UnknownShape,
    /// The event has no `detail` object.
    #[error("the event has no `detail` object")]
    MissingDetail,
    /// The finding or task state change does not match the expected schema.
    #[error("the event does not match the expected schema at `{path}`: {message}")]
    FindingShape {
        /// Where in the JSON (e.g. `resource.ecsClusterDetails.taskDetails`), clipped.
        path: String,
        /// What is wrong, clipped.
        message: String,
    },
    /// The finding was read but lacks something the responder needs.
    #[error("the GuardDuty finding cannot be handled: {0}")]
    Incident(#[from] IncidentError),
}

/// Parse one event: an EventBridge envelope (the Lambda's input), or a bare GuardDuty finding
/// as exported from the console or `GetFindings` (handy for replaying real findings).
pub fn parse_event(bytes: &[u8]) -> Result<Inbound, EventError> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge(bytes.len()));
    }
    if let Some(finding) = guardduty_event_in_one_pass(bytes) {
        return Ok(finding);
    }
    parse_through_value(bytes)
}

/// [`parse_event`] without the one-pass read (no size check): the general path alone, which
/// the one-pass read must agree with (the agreement test and the `event` fuzz target).
pub fn parse_through_value(bytes: &[u8]) -> Result<Inbound, EventError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| EventError::Json {
        line: e.line(),
        column: e.column(),
        message: clip(&e.to_string()),
    })?;
    parse_value(value)
}

/// Whether `text` may hold what a JSON value refuses and the typed pass, which checks only the
/// syntax of the members it skips, would let through: nesting past serde_json's limit (it
/// reads 127 levels) or a number past f64's range. Found by a scan that reads no value:
/// nesting deeper than [`ONE_PASS_DEPTH`], and any number with an exponent or longer than
/// [`ONE_PASS_NUMBER`] characters, are left to the general path, which says whether they are
/// wrong (GuardDuty writes neither). In a string, a backslash and the byte after it are passed
/// over together.
fn beyond_one_pass(text: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = text.get(at) {
        match byte {
            b'"' => {
                // To the closing quote, over each escape's two bytes.
                at += 1;
                loop {
                    let Some(found) = text
                        .get(at..)
                        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                    else {
                        return true;
                    };
                    if text.get(at + found) == Some(&b'"') {
                        at += found + 1;
                        break;
                    }
                    at += found + 2;
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > ONE_PASS_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let number = text.get(at..).unwrap_or_default();
                let length = number
                    .iter()
                    .take_while(|b| matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
                    .count();
                if length > ONE_PASS_NUMBER
                    || number.iter().take(length).any(|b| matches!(b, b'e' | b'E'))
                {
                    return true;
                }
                at += length;
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    false
}

/// The texts the one-pass read looks for in every event, their searchers built once (building
/// one costs about as much as the search).
struct Finders {
    cli_names: memchr::memmem::Finder<'static>,
    value_marker: memchr::memmem::Finder<'static>,
    guardduty: memchr::memmem::Finder<'static>,
}

static FINDERS: std::sync::LazyLock<Finders> = std::sync::LazyLock::new(|| Finders {
    cli_names: memchr::memmem::Finder::new(b"\"SchemaVersion\""),
    value_marker: memchr::memmem::Finder::new(b"$serde_json::private::"),
    guardduty: memchr::memmem::Finder::new(GUARDDUTY_SOURCE.as_bytes()),
});

/// Nesting the one-pass read takes: well within serde_json's.
const ONE_PASS_DEPTH: usize = 100;

/// The longest number the one-pass read takes: 300 digits before any point is below 1e300,
/// within f64's range (about 1.8e308).
const ONE_PASS_NUMBER: usize = 300;

/// A GuardDuty finding's EventBridge event, as nearly all of them arrive, read straight into
/// its types after a check that builds nothing: no JSON value built. Only an event the general
/// path ([`parse_value`]) would read the same way: no escape and no byte that may begin an unsafe
/// character (so nothing to make safe, and the text is the finding as sent), no member that
/// makes it `get-findings` output, JSON a value would hold, the envelope as the general path
/// types it, the finding's sections objects, every member named once. Anything else, an error
/// included, is left to the general path, which says what is wrong.
fn guardduty_event_in_one_pass(bytes: &[u8]) -> Option<Inbound> {
    /// The detail of a GuardDuty event: a finding, given as an object.
    struct Detail(Finding);
    impl<'de> serde::Deserialize<'de> for Detail {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            crate::finding::object_or_null(deserializer)?
                .map(Detail)
                .ok_or_else(|| serde::de::Error::custom("no finding"))
        }
    }
    impl serde::Serialize for Detail {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            self.0.serialize(serializer)
        }
    }
    // The bytes that may begin an unsafe character (see `has_unsafe`), and an escape that may
    // make one: any but `\"`, `\\` and `\/` (the second backslash of `\\` is looked at too, so
    // `\\n` is taken for an escape: the general path reads it, no harm).
    let escapes_or_unsafe = memchr::memchr3(0x7F, 0xC2, 0xE2, bytes).is_some()
        || memchr::memchr(0xEF, bytes).is_some()
        || memchr::memchr_iter(b'\\', bytes)
            .any(|at| !matches!(bytes.get(at + 1), Some(b'"' | b'\\' | b'/')));
    // `get-findings` output's member names (PascalCase) in any object: the general path may
    // read it as such; GuardDuty's events name nothing so.
    let cli_names = FINDERS.cli_names.find(bytes).is_some();
    // serde_json's private member that makes a value of a string (with its `raw_value`
    // feature): a JSON value reads it so, the typed pass ignores it.
    let value_marker = FINDERS.value_marker.find(bytes).is_some();
    // Nothing else is a GuardDuty event (ECS task changes come in bursts).
    let guardduty = FINDERS.guardduty.find(bytes).is_some();
    // An array would be read as the envelope's fields in order; the general path wants an
    // object.
    let an_object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if escapes_or_unsafe || cli_names || value_marker || !guardduty || !an_object {
        return None;
    }
    // Text that is not UTF-8 is the general path's to refuse. Checked once here, the typed
    // pass reads the text without checking each string again.
    let text = std::str::from_utf8(bytes).ok()?;
    if beyond_one_pass(bytes) {
        return None;
    }
    let event: EventBridgeEvent<Detail> = serde_json::from_str(text).ok()?;
    if event.source != GUARDDUTY_SOURCE || event.detail_type != GUARDDUTY_DETAIL_TYPE {
        return None;
    }
    let origin = Origin {
        account: event.account,
        region: event.region,
    };
    let incident = Incident::from_finding(&event.detail.0, Some(origin)).ok()?;
    Some(Inbound::Finding {
        incident: Box::new(incident),
        raw: RawFinding::EventDetail(bytes.into()),
    })
}

/// The events in one input, as people have them: one EventBridge event or GuardDuty finding,
/// `aws guardduty get-findings` output (`{"Findings": [...]}`, each finding an event), a JSON
/// array of those, or several one after another (JSON Lines, or back to back).
pub fn split_input(bytes: &[u8]) -> Result<Vec<Value>, EventError> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(EventError::InputTooLarge(bytes.len()));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(EventError::Empty);
    }
    // One value, or several one after another (JSON Lines, or back to back).
    let mut values: Vec<Value> = Vec::new();
    for value in serde_json::Deserializer::from_slice(bytes).into_iter::<Value>() {
        match value {
            Ok(value) => values.push(value),
            Err(error) => {
                return Err(EventError::Json {
                    line: error.line(),
                    column: error.column(),
                    message: clip(&error.to_string()),
                })
            }
        }
    }
    // Arrays and get-findings outputs, alone or several, hold the events themselves.
    let events = values
        .into_iter()
        .flat_map(|value| match value {
            Value::Array(items) => items,
            Value::Object(mut object)
                if !object.contains_key("detail-type")
                    && object.get("Findings").is_some_and(Value::is_array) =>
            {
                match object.remove("Findings") {
                    Some(Value::Array(findings)) => findings,
                    _ => Vec::new(),
                }
            }
            other => vec![other],
        })
        .collect();
    Ok(events)
}

/// A finding as the AWS CLI prints it (the SDK's PascalCase member names, e.g. `Resource`,
/// `EcsClusterDetails`, tags as `Key`/`Value`) renamed to the API's JSON names, which the
/// EventBridge `detail` uses: first letter lower case, and the few members whose JSON name
/// differs otherwise.
fn from_cli_names(value: Value) -> Value {
    const RENAMED: &[(&str, &str)] = &[("TaskCreatedAt", "createdAt")];
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let key = match RENAMED.iter().find(|(cli, _)| *cli == key) {
                        Some((_, json)) => json.to_string(),
                        None => {
                            let mut chars = key.chars();
                            match chars.next() {
                                Some(first) => first.to_lowercase().chain(chars).collect(),
                                None => key,
                            }
                        }
                    };
                    (key, from_cli_names(value))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(from_cli_names).collect()),
        other => other,
    }
}

/// Like [`parse_event`], for JSON already parsed (no size check).
///
/// Every string the responder reads from the event has its unsafe characters escaped (see
/// [`display_safe`]) before it is parsed, so none reaches a terminal, a notification subject or
/// a chat message as a command; the finding kept as evidence (`raw`) is the one copy as sent.
pub fn parse_value(value: Value) -> Result<Inbound, EventError> {
    // The event as sent, kept only when it differs from what is parsed.
    let (value, original) = if has_unsafe_text(&value) {
        let mut safe = value.clone();
        make_safe(&mut safe);
        (safe, Some(value))
    } else {
        (value, None)
    };
    let Value::Object(object) = &value else {
        return Err(EventError::NotAnObject);
    };
    let is_bare_finding = !object.contains_key("detail-type")
        && object.contains_key("schemaVersion")
        && object.contains_key("type");
    if is_bare_finding {
        return finding_from(value, original, None);
    }
    // `aws guardduty get-findings` prints the SDK's member names (PascalCase).
    let is_cli_finding = object.contains_key("SchemaVersion") && object.contains_key("Type");
    if is_cli_finding {
        return finding_from(from_cli_names(value), original.map(from_cli_names), None);
    }
    if !object.contains_key("detail-type") && !object.contains_key("source") {
        return Err(EventError::UnknownShape);
    }
    let Value::Object(mut fields) = value else {
        return Err(EventError::NotAnObject);
    };
    // The detail is taken out whole: deserialised through the envelope, it would be rebuilt.
    let detail = fields.remove("detail").filter(|d| !d.is_null());
    let mut envelope: Envelope = serde_json::from_value(Value::Object(fields))
        .map_err(|e| EventError::Envelope(clip(&e.to_string())))?;
    envelope.detail = detail;
    // Harmless if spoofed: a sweep releases only quarantines whose workload is gone.
    if envelope.source == RESPONDER_SOURCE && envelope.detail_type == SWEEP {
        return Ok(Inbound::Sweep {
            approvals_only: false,
        });
    }
    // Harmless if spoofed: only approvals already past their expiry are expired.
    if envelope.source == RESPONDER_SOURCE && envelope.detail_type == EXPIRE_APPROVALS {
        return Ok(Inbound::Sweep {
            approvals_only: true,
        });
    }
    let is_task_change = envelope.source == ECS_SOURCE && envelope.detail_type == TASK_STATE_CHANGE;
    if is_task_change {
        let detail = envelope.detail.ok_or(EventError::MissingDetail)?;
        let change: TaskStateChange = typed(&detail)?;
        return Ok(Inbound::TaskStateChange(change));
    }
    let is_guardduty =
        envelope.source == GUARDDUTY_SOURCE && envelope.detail_type == GUARDDUTY_DETAIL_TYPE;
    if !is_guardduty {
        return Ok(Inbound::Foreign {
            source: Some(envelope.source),
            detail_type: Some(envelope.detail_type),
        });
    }
    let detail = match envelope.detail {
        Some(detail @ Value::Object(_)) => detail,
        _ => return Err(EventError::MissingDetail),
    };
    let original_detail = match original {
        Some(Value::Object(mut object)) => object.remove("detail"),
        _ => None,
    };
    let origin = Origin {
        account: envelope.account,
        region: envelope.region,
    };
    finding_from(detail, original_detail, Some(origin))
}

/// Where an EventBridge envelope said a finding came from.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Origin {
    /// The account whose event bus delivered the event.
    pub account: Option<String>,
    /// The region of that event bus.
    pub region: Option<String>,
}

/// `safe` is the finding with unsafe characters escaped (what is parsed); `original` the
/// finding as sent, when it differs (what is kept as evidence).
fn finding_from(
    safe: Value,
    original: Option<Value>,
    origin: Option<Origin>,
) -> Result<Inbound, EventError> {
    sections_are_objects(&safe)?;
    let finding: Finding = typed(&safe)?;
    let incident = Incident::from_finding(&finding, origin)?;
    Ok(Inbound::Finding {
        incident: Box::new(incident),
        raw: RawFinding::Value(original.unwrap_or(safe)),
    })
}

/// `value` as a `T`. Tracking the path costs on every field, so it is done only to say where
/// a value that does not fit went wrong (the same deserialisation, so the same verdict).
fn typed<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, EventError> {
    T::deserialize(value).or_else(|_| {
        serde_path_to_error::deserialize(value).map_err(|e| EventError::FindingShape {
            path: clip(&e.path().to_string()),
            message: clip(&e.inner().to_string()),
        })
    })
}

/// serde reads a struct from a JSON array too (its fields in order, so `[]` is every field
/// absent): a section of the finding given as anything but an object (or null) is an error,
/// not an empty section that hides, say, the sample flag.
fn sections_are_objects(finding: &Value) -> Result<(), EventError> {
    const SECTIONS: &[&str] = &[
        "/resource",
        "/resource/ecsClusterDetails",
        "/resource/ecsClusterDetails/taskDetails",
        "/resource/instanceDetails",
        "/resource/eksClusterDetails",
        "/resource/kubernetesDetails",
        "/resource/kubernetesDetails/kubernetesWorkloadDetails",
        "/service",
        "/service/additionalInfo",
        "/service/runtimeDetails",
        "/service/runtimeDetails/process",
        "/service/runtimeDetails/context",
    ];
    for section in SECTIONS {
        match finding.pointer(section) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => {
                return Err(EventError::FindingShape {
                    path: section.trim_start_matches('/').replace('/', "."),
                    message: "expected an object".to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Characters that act on a terminal, an e-mail header or a chat client instead of being
/// shown: control characters (C0 and C1, DEL: ANSI escape sequences, line breaks that forge a
/// subject or a log line) and the Unicode formatting characters that reorder or hide text (the
/// bidirectional overrides and isolates of "Trojan Source", line and paragraph separators).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Whether `text` holds an unsafe character. Every one of them is an ASCII control byte or
/// begins with 0xC2 (C1 controls), 0xE2 (U+2000 to U+2FFF) or 0xEF (U+FEFF) in UTF-8: text
/// without those bytes — nearly all of it — is cleared by a byte scan.
fn has_unsafe(text: &str) -> bool {
    text.bytes()
        .any(|b| b < 0x20 || b == 0x7F || matches!(b, 0xC2 | 0xE2 | 0xEF))
        && text.chars().any(is_unsafe)
}

/// `text` with every unsafe character written as a visible escape (`\u{1b}`), so what a
/// finding says is shown, never obeyed.
pub fn display_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !has_unsafe(text) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            safe.extend(c.escape_unicode());
        } else {
            safe.push(c);
        }
    }
    std::borrow::Cow::Owned(safe)
}

fn has_unsafe_text(value: &Value) -> bool {
    match value {
        Value::String(text) => has_unsafe(text),
        Value::Array(items) => items.iter().any(has_unsafe_text),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| has_unsafe(key) || has_unsafe_text(value)),
        _ => false,
    }
}

fn make_safe(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let std::borrow::Cow::Owned(safe) = display_safe(text) {
                *text = safe;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(make_safe),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut value) in entries {
                make_safe(&mut value);
                map.insert(display_safe(&key).into_owned(), value);
            }
        }
        _ => {}
    }
}

/// Shorten text for an error message, on a character boundary.
pub fn clip(text: &str) -> String {
    let text = display_safe(text);
    if text.chars().count() <= MAX_ERROR_CHARS {
        return text.into_owned();
    }
    let kept: String = text.chars().take(MAX_ERROR_CHARS).collect();
    format!("{kept}… ({} characters in all)", text.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(detail: &str) -> String {
        format!(
            r#"{{"version":"0","id":"e","detail-type":"GuardDuty Finding","source":"aws.guardduty",
               "account":"111122223333","time":"2026-01-01T00:00:00Z","region":"us-east-1",
               "resources":[],"detail":{detail}}}"#
        )
    }

    #[test]
    fn truncated_json_names_the_position() {
        let err = parse_event(br#"{"detail-type": "GuardDuty Fin"#).unwrap_err();
        assert!(matches!(err, EventError::Json { line: 1, .. }), "{err}");
    }

    #[test]
    fn foreign_event_is_recognised_not_rejected() {
        let event = r#"{"detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","detail":{}}"#;
        match parse_event(event.as_bytes()).unwrap() {
            Inbound::Foreign {
                source,
                detail_type,
            } => {
                assert_eq!(source.as_deref(), Some("aws.ec2"));
                assert_eq!(
                    detail_type.as_deref(),
                    Some("EC2 Instance State-change Notification")
                );
            }
            other => panic!("expected foreign, got {other:?}"),
        }
    }

    #[test]
    fn wrong_type_reports_the_path() {
        let detail = r#"{"id":"f","type":"A:Runtime/B","severity":5,"accountId":"1","region":"r",
                         "resource":{"resourceType":"ECSCluster","ecsClusterDetails":{"arn":"a","taskDetails":{"arn":"t","containers":"nope"}}}}"#;
        let err = parse_event(envelope(detail).as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("resource.ecsClusterDetails.taskDetails.containers"),
            "{text}"
        );
    }

    #[test]
    fn missing_resource_is_a_clear_error() {
        let detail = r#"{"id":"f","type":"A:Runtime/B","severity":5,"accountId":"111122223333","region":"r"}"#;
        let err = parse_event(envelope(detail).as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the GuardDuty finding cannot be handled: the finding has no resource"
        );
    }

    #[test]
    fn huge_strings_are_clipped_in_errors() {
        let huge = "x".repeat(100_000);
        let detail = format!(r#"{{"id":"f","type":"A:Runtime/B","severity":"{huge}"}}"#);
        let err = parse_event(envelope(&detail).as_bytes()).unwrap_err();
        assert!(err.to_string().len() < 1000, "{}", err.to_string().len());
    }

    #[test]
    fn oversized_events_are_refused_before_parsing() {
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert!(matches!(parse_event(&big), Err(EventError::TooLarge(_))));
    }

    #[test]
    fn an_object_that_is_neither_envelope_nor_finding_is_a_clear_error() {
        let err = parse_event(br#"{"source": "aws.guardduty"}"#).unwrap_err();
        assert!(matches!(err, EventError::Envelope(_)), "{err}");
        assert!(err.to_string().contains("missing field"), "{err}");
        let no_detail = br#"{"source":"aws.guardduty","detail-type":"GuardDuty Finding"}"#;
        assert!(matches!(
            parse_event(no_detail),
            Err(EventError::MissingDetail)
        ));
    }

    #[test]
    fn inputs_come_in_the_shapes_people_have() {
        let finding = r#"{"schemaVersion":"2.0","id":"f","type":"A:Runtime/B","severity":5,"accountId":"1","region":"r","resource":{"resourceType":"Lambda"}}"#;
        let get_findings = format!(r#"{{"Findings": [{finding}, {finding}]}}"#);
        assert_eq!(split_input(get_findings.as_bytes()).unwrap().len(), 2);
        let array = format!("[{finding}, {finding}, {finding}]");
        assert_eq!(split_input(array.as_bytes()).unwrap().len(), 3);
        let lines = format!("{finding}\n\n{finding}\n");
        assert_eq!(split_input(lines.as_bytes()).unwrap().len(), 2);
        let pages = format!("{get_findings}\n{get_findings}\n");
        assert_eq!(
            split_input(pages.as_bytes()).unwrap().len(),
            4,
            "pages of get-findings"
        );
        let back_to_back = format!("{finding}{finding}{finding}");
        assert_eq!(split_input(back_to_back.as_bytes()).unwrap().len(), 3);
        let broken = format!("{finding}\n{{\"detail\": ");
        assert!(matches!(
            split_input(broken.as_bytes()),
            Err(EventError::Json { line: 2, .. })
        ));
        assert_eq!(split_input(finding.as_bytes()).unwrap().len(), 1);
        assert!(matches!(split_input(b"  \n"), Err(EventError::Empty)));
        assert!(split_input(b"")
            .unwrap_err()
            .to_string()
            .contains("get-findings"));
        let unknown = parse_event(br#"{"hello": "world"}"#).unwrap_err();
        assert!(matches!(unknown, EventError::UnknownShape), "{unknown}");
        assert!(
            unknown.to_string().contains("`{\"Findings\": [...]}`"),
            "{unknown}"
        );
    }

    #[test]
    fn get_findings_output_uses_the_cli_names() {
        // As `aws guardduty get-findings` prints it (AWS CLI reference example shape).
        let cli = r#"{"Findings": [{"SchemaVersion": "2.0", "Id": "f1", "Type": "Impact:Runtime/CryptoMinerExecuted",
            "Severity": 8, "AccountId": "111122223333", "Region": "us-east-1",
            "Resource": {"ResourceType": "ECSCluster", "EcsClusterDetails": {"Name": "prod",
                "Arn": "arn:aws:ecs:us-east-1:111122223333:cluster/prod",
                "TaskDetails": {"Arn": "arn:aws:ecs:us-east-1:111122223333:task/prod/abc",
                    "DefinitionArn": "arn:aws:ecs:us-east-1:111122223333:task-definition/api:3",
                    "TaskCreatedAt": "2026-11-20T08:59:31+00:00", "Group": "service:api",
                    "LaunchType": "FARGATE", "Tags": [{"Key": "team", "Value": "payments"}]}}},
            "Service": {"Count": 2, "AdditionalInfo": {"Value": "{}", "Type": "default"}}}]}"#;
        let findings = split_input(cli.as_bytes()).unwrap();
        assert_eq!(findings.len(), 1);
        let Inbound::Finding { incident, .. } = parse_value(findings[0].clone()).unwrap() else {
            panic!("a finding")
        };
        assert_eq!(incident.finding_id, "f1");
        assert_eq!(incident.count, 2);
        let crate::incident::Target::EcsTask(task) = &incident.target else {
            panic!("{:?}", incident.target)
        };
        assert_eq!(task.service.as_deref(), Some("api"));
        assert_eq!(incident.target.tag("team"), Some("payments"));
    }

    #[test]
    fn non_object_json_is_refused() {
        assert!(matches!(
            parse_event(b"[1,2]"),
            Err(EventError::NotAnObject)
        ));
    }

    #[test]
    fn bare_finding_is_accepted_and_member_account_is_kept() {
        let detail = r#"{"schemaVersion":"2.0","id":"f","type":"A:Runtime/B","severity":5,"accountId":"444455556666","region":"eu-west-1",
                         "resource":{"resourceType":"Lambda"}}"#;
        match parse_event(detail.as_bytes()).unwrap() {
            Inbound::Finding { incident, .. } => {
                assert_eq!(incident.account_id, "444455556666");
                assert_eq!(incident.delivered_via_account, None);
            }
            other => panic!("{other:?}"),
        }
        match parse_event(envelope(detail).as_bytes()).unwrap() {
            Inbound::Finding { incident, .. } => {
                assert_eq!(incident.account_id, "444455556666");
                assert_eq!(
                    incident.delivered_via_account.as_deref(),
                    Some("111122223333")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn terminal_escapes_and_bidi_overrides_are_shown_not_obeyed() {
        assert_eq!(display_safe("plain — text"), "plain — text");
        assert_eq!(display_safe("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(display_safe("x\r\nSubject: y"), "x\\u{d}\\u{a}Subject: y");
        assert_eq!(display_safe("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(display_safe("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(
            display_safe("\u{feff}bom \u{200b}zw"),
            "\\u{feff}bom \\u{200b}zw"
        );
        // Lead bytes 0xC2, 0xE2 and 0xEF of harmless characters are looked at and kept.
        assert_eq!(display_safe("£ — €"), "£ — €");
    }

    #[test]
    fn every_string_of_a_finding_is_made_safe_but_the_evidence_copy_is_kept_as_sent() {
        let path = format!(
            "{}/../events/fargate-crypto-miner-high.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut value: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        value["detail"]["title"] = Value::from("miner\u{1b}]0;owned\u{7}\u{1b}[2J");
        value["detail"]["resource"]["ecsClusterDetails"]["taskDetails"]["containers"][0]["name"] =
            Value::from("web\u{202e}txt.exe");
        let Inbound::Finding { incident, raw } = parse_value(value.clone()).unwrap() else {
            panic!("a finding")
        };
        let shown = serde_json::to_string(&*incident).unwrap();
        assert!(
            !shown.contains("\\u001b") && !shown.contains('\u{202e}'),
            "{shown}"
        );
        assert_eq!(
            incident.title.as_deref(),
            Some("miner\\u{1b}]0;owned\\u{7}\\u{1b}[2J")
        );
        assert_eq!(
            raw.to_value(),
            value["detail"],
            "evidence keeps the finding as sent"
        );
    }

    /// What `parse_event` makes of `bytes` and what the general path alone makes of them, in
    /// a comparable form: the incident and the finding kept as evidence, or the error's text.
    fn both_ways(bytes: &[u8]) -> (String, String) {
        let shown = |parsed: Result<Inbound, EventError>| match parsed {
            Ok(Inbound::Finding { incident, raw }) => {
                format!("{incident:?} {}", raw.to_value())
            }
            Ok(other) => format!("{other:?}"),
            Err(error) => error.to_string(),
        };
        (shown(parse_event(bytes)), shown(parse_through_value(bytes)))
    }

    /// The scan for what the one-pass read leaves to the general path follows strings over
    /// their escapes: brackets and numbers inside a string are text, after it they count.
    #[test]
    fn the_scan_knows_text_from_structure() {
        let deep = |inner: &str| format!("{}{inner}{}", "[".repeat(101), "]".repeat(101));
        for plain in [
            r#"{"a": "[[[[ 1e400 ]]]]", "b": 12.5, "c": -3}"#.to_string(),
            r#"{"a": "\\\"", "b": "\"1e9\"", "c": true, "d": false}"#.to_string(),
            format!(r#"{{"a": "{}"}}"#, "{".repeat(500)),
            format!("{}1{}", "[".repeat(100), "]".repeat(100)),
            format!(r#"{{"a": {}}}"#, "9".repeat(300)),
            // A string ending in an escaped backslash ends there.
            r#"{"a": "\\", "b": 1}"#.to_string(),
        ] {
            assert!(!beyond_one_pass(plain.as_bytes()), "{plain}");
        }
        for left in [
            r#"{"a": "\\", "b": 1e400}"#.to_string(),
            r#"{"a": "\"", "b": 1E4}"#.to_string(),
            r#"{"a": "\\\"", "b": [-2e-1]}"#.to_string(),
            format!(r#"{{"a": {}}}"#, "9".repeat(301)),
            format!(r#"{{"a": "\\", "b": {}}}"#, deep("1")),
            // Brackets inside a string do not close anything.
            format!(r#"{}"]]]]"{}"#, "[".repeat(50), "[".repeat(51)),
            // A number between two strings holding an escaped quote is outside both.
            r#"{"a": "\"", "b": 1e400, "c": "\""}"#.to_string(),
            r#"{"a": "unterminated}"#.to_string(),
            r#"{"a": "ends in an escape\"#.to_string(),
        ] {
            assert!(beyond_one_pass(left.as_bytes()), "{left}");
        }
    }

    /// Every way to spoil one member of a sample finding's event: removed, or given each kind
    /// of JSON value; an array for the envelope; a member named twice; an escape; the CLI's
    /// names. The one-pass read of a GuardDuty event agrees with the general path on each:
    /// the same incident and evidence, or the same error.
    #[test]
    fn the_one_pass_read_agrees_with_the_general_path() {
        fn members(value: &Value, path: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
            if let Value::Object(map) = value {
                for (key, inner) in map {
                    path.push(key.clone());
                    found.push(path.clone());
                    members(inner, path, found);
                    path.pop();
                }
            }
        }
        fn at<'a>(value: &'a mut Value, path: &[String]) -> &'a mut serde_json::Map<String, Value> {
            let mut here = value;
            for key in path {
                here = &mut here[key.as_str()];
            }
            here.as_object_mut().unwrap()
        }
        let replacements = [
            Value::Null,
            serde_json::json!([]),
            serde_json::json!([1]),
            serde_json::json!({}),
            serde_json::json!("x"),
            serde_json::json!(1.5),
            serde_json::json!(true),
        ];
        let (mut compared, mut taken) = (0, 0);
        for sample in [
            "fargate-crypto-miner-high.json",
            "ec2-instance-process-injection.json",
            "eks-runc-container-escape.json",
        ] {
            let path = format!("{}/../events/{sample}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(path).unwrap();
            let event: Value = serde_json::from_str(&text).unwrap();
            let mut variants = vec![
                text.clone().into_bytes(),
                format!("[{text}]").into_bytes(),
                text.replacen("\"detail\"", "\"id\": \"twice\", \"detail\"", 1)
                    .into_bytes(),
                text.replacen("\"resource\"", "\"title\": \"twice\", \"resource\"", 1)
                    .into_bytes(),
                text.replacen(
                    "\"resource\"",
                    "\"SchemaVersion\": \"2.0\", \"Type\": \"t\", \"resource\"",
                    1,
                )
                .into_bytes(),
                text.replacen(
                    "\"resource\"",
                    "\"title\": \"a\\u001b[2J\", \"resource\"",
                    1,
                )
                .into_bytes(),
                text.replacen("\"resource\"", "\"note\": \"a\\ttab\", \"resource\"", 1)
                    .into_bytes(),
                text.replacen(
                    "\"resource\"",
                    "\"note\": \"a\\\\\\\"q\\/\", \"resource\"",
                    1,
                )
                .into_bytes(),
                text.replacen(
                    "\"partition\": \"aws\"",
                    "\"partition\": \"a\\\\\\\"ws\\/\"",
                    1,
                )
                .into_bytes(),
                text.replacen(
                    "\"resource\"",
                    &format!(
                        "\"deep\": {}1{}, \"resource\"",
                        "{\"a\":".repeat(200),
                        "}".repeat(200)
                    ),
                    1,
                )
                .into_bytes(),
            ];
            // What a JSON value refuses, in members nothing reads, in the detail and outside.
            for member in ["\"detail\": {", "\"resource\": {"] {
                let long = format!("\"x\": {}, ", "9".repeat(400));
                let cases: [&[u8]; 11] = [
                    b"\"x\": 1e400, ",
                    // After strings ending in an escaped backslash or quote.
                    b"\"x\": \"a\\\\\", \"y\": 1e400, ",
                    b"\"x\": [\"\\\"\", \"\\\\\", 1e400], ",
                    b"\"x\": \"\\\"\", \"y\": 1e400, \"z\": \"\\\"\", ",
                    b"\"x\": -1e400, ",
                    b"\"x\": 1234567890123456789012345678901234567890e300, ",
                    b"\"x\": 1e-400, ",
                    b"\"x\": \"\xE3\x28\", ",
                    b"\"x\": \"\xFF\", ",
                    long.as_bytes(),
                    &[
                        b"\"x\": ".as_slice(),
                        [b'['; 130].as_slice(),
                        [b']'; 130].as_slice(),
                        b", ".as_slice(),
                    ]
                    .concat(),
                ];
                for case in cases {
                    let at = text.find(member).unwrap() + member.len();
                    variants.push([&text.as_bytes()[..at], case, &text.as_bytes()[at..]].concat());
                }
            }
            // serde_json's private member that makes a value of a string.
            for marker in [
                r#""x": {"$serde_json::private::RawValue": 0}, "#,
                r#""x": {"$serde_json::private::RawValue": "{\"sample\":true}"}, "#,
            ] {
                let at = text.find("\"detail\": {").unwrap() + "\"detail\": {".len();
                variants.push(format!("{}{marker}{}", &text[..at], &text[at..]).into_bytes());
            }
            // Severity as JSON may write it; text around the event.
            for severity in [
                "1e1",
                "-0",
                "\"5\"",
                "18446744073709551616",
                "5.000000000000000001",
            ] {
                let mut changed = event.clone();
                changed["detail"]["severity"] = serde_json::from_str(severity).unwrap();
                variants.push(serde_json::to_vec(&changed).unwrap());
                variants.push(
                    serde_json::to_string(&event)
                        .unwrap()
                        .replacen(
                            &format!("\"severity\":{}", event["detail"]["severity"]),
                            &format!("\"severity\":{severity}"),
                            1,
                        )
                        .into_bytes(),
                );
            }
            variants.push([b"\x0C".as_slice(), text.as_bytes()].concat());
            variants.push([b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat());
            variants.push([text.as_bytes(), b" x"].concat());
            variants.push([text.as_bytes(), b" {}"].concat());
            let mut paths = Vec::new();
            members(&event, &mut Vec::new(), &mut paths);
            for path in &paths {
                let (parent, key) = path.split_at(path.len() - 1);
                let mut removed = event.clone();
                at(&mut removed, parent).remove(&key[0]);
                variants.push(serde_json::to_vec(&removed).unwrap());
                for replacement in &replacements {
                    let mut changed = event.clone();
                    at(&mut changed, parent).insert(key[0].clone(), replacement.clone());
                    variants.push(serde_json::to_vec(&changed).unwrap());
                }
            }
            assert!(
                guardduty_event_in_one_pass(&variants[0]).is_some(),
                "{sample}"
            );
            for refused in &variants[1..7] {
                assert!(guardduty_event_in_one_pass(refused).is_none());
            }
            // `\\`, `\"` and `\/` make no unsafe character: read in one pass (a member the
            // model ignores, so no member is named twice).
            assert!(guardduty_event_in_one_pass(&variants[7]).is_some());
            assert!(guardduty_event_in_one_pass(&variants[8]).is_some());
            // Deeper than the general path reads: left to it (which refuses it).
            assert!(guardduty_event_in_one_pass(&variants[9]).is_none());
            assert!(parse_event(&variants[9]).is_err());
            for variant in &variants {
                let (one_pass, general) = both_ways(variant);
                assert_eq!(one_pass, general, "{}", String::from_utf8_lossy(variant));
                compared += 1;
                taken += usize::from(guardduty_event_in_one_pass(variant).is_some());
            }
        }
        assert!(compared > 1_000, "{compared}");
        // Both ways were taken, many times each (about 600 of 1,600 in one pass).
        assert!(
            taken > compared / 5 && taken < compared - compared / 5,
            "{taken} of {compared}"
        );
    }
}
