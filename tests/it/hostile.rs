//! Hostile and broken input: every event an attacker or a broken pipeline could put in front of
//! the function gets a clear decision or error and an audit record, and changes nothing; text
//! from a finding reaches no terminal, subject or message as a command.

use responder::report::{DecisionKind, Report};
use serde_json::{json, Value};

use crate::support::World;

/// One hostile input and what it should come to.
struct Case {
    name: String,
    bytes: Vec<u8>,
}

fn case(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Case {
    Case {
        name: name.into(),
        bytes: bytes.into(),
    }
}

fn with(event: &Value, pointer: &str, new: Value) -> Value {
    let mut event = event.clone();
    *event
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = new;
    event
}

const TASK: &str = "/detail/resource/ecsClusterDetails/taskDetails";

/// Every field the parser reads, each given every JSON type it does not have.
fn wrong_types(event: &Value) -> Vec<Case> {
    let fields = [
        "/source",
        "/detail-type",
        "/account",
        "/region",
        "/detail",
        "/detail/id",
        "/detail/type",
        "/detail/severity",
        "/detail/accountId",
        "/detail/region",
        "/detail/title",
        "/detail/createdAt",
        "/detail/resource",
        "/detail/resource/resourceType",
        "/detail/resource/ecsClusterDetails",
        "/detail/resource/ecsClusterDetails/arn",
        "/detail/resource/ecsClusterDetails/name",
        "/detail/resource/ecsClusterDetails/tags",
        TASK,
        "/detail/resource/ecsClusterDetails/taskDetails/arn",
        "/detail/resource/ecsClusterDetails/taskDetails/group",
        "/detail/resource/ecsClusterDetails/taskDetails/launchType",
        "/detail/resource/ecsClusterDetails/taskDetails/definitionArn",
        "/detail/resource/ecsClusterDetails/taskDetails/containers",
        "/detail/resource/ecsClusterDetails/taskDetails/containers/0/image",
        "/detail/service",
        "/detail/service/count",
        "/detail/service/archived",
        "/detail/service/additionalInfo",
        "/detail/service/runtimeDetails",
        "/detail/service/runtimeDetails/process",
        "/detail/service/runtimeDetails/process/name",
    ];
    let values = [
        json!(true),
        json!(-1),
        json!(1e308),
        json!("text"),
        json!([]),
        json!({}),
    ];
    let kind = |v: &Value| std::mem::discriminant(v);
    let mut cases = Vec::new();
    for field in fields {
        let original = event
            .pointer(field)
            .unwrap_or_else(|| panic!("the sample has no {field}"));
        for value in &values {
            if kind(value) == kind(original) {
                continue;
            }
            cases.push(case(
                format!("{field} = {value}"),
                with(event, field, value.clone()).to_string(),
            ));
        }
    }
    cases
}

fn corpus(world: &World) -> Vec<Case> {
    let event = world.miner_event(0, 1);
    let text = event.to_string();
    let mut cases = vec![
        case("truncated", &text.as_bytes()[..text.len() / 2]),
        case("not JSON", b"\xff\xfe{not json".to_vec()),
        case("empty", b"".to_vec()),
        case("a JSON array", b"[1, 2, 3]".to_vec()),
        case(
            "10,000 nested arrays",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        case(
            "10,000 nested objects in the detail",
            text.replacen(
                r#""detail":{"#,
                &format!(
                    r#""detail":{{"deep":{}1{},"#,
                    r#"{"a":"#.repeat(10_000),
                    "}".repeat(10_000)
                ),
                1,
            ),
        ),
        case(
            "a 10 MB string",
            with(&event, "/detail/title", json!("x".repeat(10 << 20))).to_string(),
        ),
    ];
    cases.extend(wrong_types(&event));
    for severity in [
        json!("NaN"),
        json!(-5),
        json!(11),
        json!("1e308"),
        json!("9; rm -rf /"),
    ] {
        cases.push(case(
            format!("severity {severity}"),
            with(&event, "/detail/severity", severity).to_string(),
        ));
    }
    // The resource elsewhere than the finding says: another account, region, partition,
    // cluster; path tricks and control characters in identifiers.
    let task_arn = event
        .pointer(&format!("{TASK}/arn"))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let account = emulator::fixture::ACCOUNT;
    let arns = [
        task_arn.replace(account, "999988887777"),
        task_arn.replace("us-east-1", "eu-west-1"),
        task_arn.replace("arn:aws:", "arn:aws-cn:"),
        task_arn.replacen(
            &format!("/{}/", world.fixture.cluster_name),
            "/other-cluster/",
            1,
        ),
        format!("{task_arn}/../../other"),
        format!("{task_arn}\u{1b}[2J"),
        format!("{task_arn}\nSubject: hello"),
        "*".to_string(),
        "arn:aws:ecs:us-east-1:123456789012:task/*".to_string(),
    ];
    for arn in arns {
        cases.push(case(
            format!("task ARN {arn:?}"),
            with(&event, &format!("{TASK}/arn"), json!(arn)).to_string(),
        ));
    }
    cases.push(case(
        "instance id with a path",
        with(
            &world.instance_event("i-0123456789abcdef0", "eni-0123456789abcdef0", 2),
            "/detail/resource/instanceDetails/instanceId",
            json!("i-0123/../../x"),
        )
        .to_string(),
    ));
    cases.push(case(
        "finding id that is a key path",
        with(&event, "/detail/id", json!("../audit#2026")).to_string(),
    ));
    // Imitations of GuardDuty and envelopes that disagree with their finding.
    for (source, detail_type) in [
        ("aws.guardduty.fake", "GuardDuty Finding"),
        ("custom.guardduty", "GuardDuty Finding"),
        ("aws.guardduty", "GuardDuty Finding\u{0}"),
        ("aws.guardduty", "GuardDuty finding"),
    ] {
        let forged = with(
            &with(&event, "/source", json!(source)),
            "/detail-type",
            json!(detail_type),
        );
        cases.push(case(
            format!("source {source:?} detail-type {detail_type:?}"),
            forged.to_string(),
        ));
    }
    cases.push(case(
        "envelope region disagrees with the finding",
        with(&event, "/region", json!("eu-west-1")).to_string(),
    ));
    cases.push(case(
        "delivered by an unlisted account",
        with(&event, "/account", json!("999988887777")).to_string(),
    ));
    cases.push(case(
        "finding in an unlisted region",
        text.replace("us-east-1", "ap-south-1"),
    ));
    cases.push(case(
        "a whole finding from an unlisted account",
        text.replace(account, "777788889999"),
    ));
    cases.push(case(
        "a bare finding, no envelope",
        event["detail"].to_string(),
    ));
    // Resource types no action touches, the responder's own function among them.
    cases.push(case(
        "a finding on the responder's own function",
        with(
            &event,
            "/detail/resource",
            json!({"resourceType": "Lambda", "lambdaDetails": {"functionName": "guardduty-responder-ResponderFunction-abc", "functionArn": format!("arn:aws:lambda:us-east-1:{account}:function:guardduty-responder-ResponderFunction-abc")}}),
        )
        .to_string(),
    ));
    cases.push(case(
        "an unknown resource type with an escape sequence",
        with(
            &event,
            "/detail/resource/resourceType",
            json!("Bucket\u{1b}]0;pwned\u{7}"),
        )
        .to_string(),
    ));
    cases
}

/// Raw control characters or text-reordering characters in text meant for people.
fn unsafe_chars(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c))
        .collect()
}

#[tokio::test]
async fn hostile_events_get_a_decision_or_an_error_an_audit_record_and_change_nothing() {
    let world = World::new(2).await;
    let cases = corpus(&world);
    assert!(cases.len() > 150, "{} cases", cases.len());
    let mut problems = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        world.proxy.clear_calls();
        let response = world
            .responder
            .respond(
                Some(case.name.clone()),
                &case.bytes,
                &format!("hostile-{n}"),
                None,
                None,
            )
            .await;
        let report: &Report = &response.report;
        if !matches!(report.decision, DecisionKind::Error | DecisionKind::Skip) {
            problems.push(format!(
                "{}: decided {:?}: {}",
                case.name, report.decision, report.reason
            ));
        }
        let audited = report.execution.as_ref().and_then(|e| e.audit.as_ref());
        if audited.is_none() {
            problems.push(format!(
                "{}: no audit record: {:?}",
                case.name, report.notes
            ));
        }
        let changes: Vec<String> = world
            .proxy
            .mutating_calls()
            .into_iter()
            .filter(|c| !(c.service == "dynamodb" && c.operation == "PutItem"))
            .map(|c| format!("{} {}", c.service, c.operation))
            .collect();
        if !changes.is_empty() {
            problems.push(format!("{}: changed {changes:?}", case.name));
        }
        let said = format!(
            "{} {}",
            report.reason,
            report.error.as_deref().unwrap_or("")
        );
        if !unsafe_chars(&said).is_empty() || said.len() > 2_000 {
            problems.push(format!(
                "{}: unsafe or unbounded text: {said:.300?}",
                case.name
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        world.notifications().await.is_empty(),
        "nothing was announced"
    );
}

#[tokio::test]
async fn text_from_a_finding_is_shown_never_obeyed() {
    let world = World::new(2).await;
    let hostile = "miner\u{1b}]0;owned\u{7}\u{1b}[2J\r\nSubject: all clear\u{202e}exe.txt";
    let mut event = world.miner_event(0, 3);
    event["detail"]["title"] = json!(hostile);
    event["detail"]["severity"] = json!(2.0); // Low: notify only
    let containers = format!("{TASK}/containers/0/name");
    event = with(&event, &containers, json!(hostile));
    // The cluster's name (not its ARN, which must be an ARN) is in the subject and the body.
    event = with(
        &event,
        "/detail/resource/ecsClusterDetails/name",
        json!(hostile),
    );
    if let Some(process) = event.pointer_mut("/detail/service/runtimeDetails/process") {
        process["name"] = json!(hostile);
        process["executablePath"] = json!(format!("/tmp/{hostile}"));
    }
    let report = world.respond(&event).await;
    assert_eq!(
        report.decision,
        DecisionKind::Act,
        "{}",
        report.to_json_line()
    );
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1);
    let note = &notes[0];
    assert!(
        unsafe_chars(&note.subject).is_empty() && !note.subject.contains('\n'),
        "{:?}",
        note.subject
    );
    assert!(unsafe_chars(&note.body).is_empty(), "{:?}", note.body);
    assert!(
        note.body.contains(r"\u{1b}[2J"),
        "the text is shown, escaped: {}",
        note.body
    );
    let text = report.to_text();
    let without_styles: String = strip_styles(&text);
    assert!(
        unsafe_chars(&without_styles).is_empty(),
        "{without_styles:?}"
    );
}

/// The report's own SGR styles (`ESC [ … m`) removed, so only what came from the finding is
/// left to check.
fn strip_styles(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for next in chars.by_ref() {
                if next == 'm' {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A command line GuardDuty observed may carry passwords and keys: only the evidence bucket's
/// raw copy of the finding keeps them; the report, the audit record, the step records, the
/// other evidence objects and the notification show them redacted.
#[tokio::test]
async fn secrets_in_a_command_line_reach_no_output_but_the_raw_finding() {
    let world = World::new(2).await;
    let mut event = world.miner_event(0, 4);
    let secrets = [
        "hunter2-SECRET1",
        "tok-SECRET2",
        "pw-SECRET3",
        "AKIAIOSFODNN7EXAMPLE",
    ];
    event["detail"]["service"]["runtimeDetails"]["context"] = json!({
        "commandLineExample": format!(
            "mysql --password {} -h db DB_TOKEN={} https://u:{}@x.example {}",
            secrets[0], secrets[1], secrets[2], secrets[3]
        )
    });
    let report = world.respond(&event).await;
    let mut outputs = vec![
        ("report", report.to_json_line()),
        ("text", report.to_text()),
        ("metrics", report.emf_line(0)),
    ];
    for note in world.notifications().await {
        outputs.push(("subject", note.subject.clone()));
        outputs.push(("body", note.body.clone()));
        outputs.push(("attributes", note.attributes.join("\n")));
        outputs.push((
            "report attribute",
            note.report.map(|r| r.to_string()).unwrap_or_default(),
        ));
    }
    let items = world
        .clients
        .dynamodb
        .query()
        .table_name(&world.fixture.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("finding#{}", world.finding_id(4))),
        )
        .send()
        .await
        .unwrap();
    assert!(items.count() > 2, "step and audit records");
    outputs.push(("ledger", format!("{:?}", items.items())));
    let evidence = crate::support::evidence(&report);
    let mut raw = String::new();
    for object in &evidence.objects {
        let text =
            String::from_utf8_lossy(&world.object(&evidence.bucket, &object.key).await).to_string();
        if object.key.ends_with("/finding.json") {
            raw = text;
        } else {
            outputs.push(("evidence", text));
        }
    }
    for (name, text) in &outputs {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{secret} in the {name}: {text:.2000}"
            );
        }
    }
    let body = &outputs.iter().find(|(n, _)| *n == "body").unwrap().1;
    assert!(
        body.contains("Command line (secrets redacted): mysql --password [REDACTED] -h db DB_TOKEN=[REDACTED] https://[REDACTED]@x.example [REDACTED]"),
        "{body}"
    );
    for secret in secrets {
        assert!(
            raw.contains(secret),
            "the raw finding is the one unredacted copy"
        );
    }
}
