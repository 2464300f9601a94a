//! Where moto is kinder than AWS, the answers AWS gives:
//!
//! - security-group changes on requester-managed ENIs (every ECS task ENI) are refused, and
//!   DescribeNetworkInterfaces reports those ENIs as requester-managed;
//! - `CreateNetworkAclEntry` checks, atomically with the write, that the rule number is free in
//!   that direction (`NetworkAclEntryAlreadyExists`) and the quota: entries per ACL, per
//!   direction, IPv4 and IPv6 counted apart, the default rules included
//!   (`NetworkAclEntryLimitExceeded`;
//!   [quotas](https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html));
//! - DescribeNetworkAcls lists the default deny rule (32767) of every ACL, custom ones too;
//! - DescribeTasks lists unknown tasks under `failures` with reason `MISSING`, and StopTask on
//!   an unknown task is a client error;
//! - `PutRolePolicy` and `DeleteRolePolicy` are refused (`AccessDenied`) on roles not tagged
//!   `incident-responder:revocable=true`, as the template's grant makes AWS refuse them;
//! - DescribeServices reports a service's tasks as running: moto says `runningCount: 0` for
//!   every service (unless told a fixed number), AWS counts the tasks in RUNNING, which for the
//!   fixture's steady services is their desired count.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};
use serde_json::Value;

use super::{error_response, form_value, FaultConfig, Protocol, State, MOTO_ECS_ENI};

/// One request, as the fidelity rules need to see it.
pub(super) struct Request<'a> {
    pub(super) state: &'a State,
    pub(super) parts: &'a hyper::http::request::Parts,
    pub(super) text: &'a str,
    pub(super) service: &'a str,
    pub(super) operation: &'a str,
    pub(super) protocol: Protocol,
    pub(super) config: &'a FaultConfig,
}

type Answer = (Response<Full<Bytes>>, Option<String>);

/// Before forwarding: what AWS would refuse.
pub(super) async fn refuse(request: &Request<'_>) -> Option<Answer> {
    let refusal = |code: &str, message: String, note: &str| {
        Some((
            error_response(request.protocol, request.service, 400, code, &message),
            Some(note.to_string()),
        ))
    };
    let text = request.text;
    match request.operation {
        "ModifyNetworkInterfaceAttribute"
            if text.contains("SecurityGroupId") || text.contains("Groups") =>
        {
            let eni = form_value(text, "NetworkInterfaceId")?;
            if is_task_eni(request, &eni).await {
                return refusal(
                    "OperationNotPermitted",
                    format!("You do not have permission to modify the security groups of network interface {eni}: it is a requester-managed interface."),
                    "requester-managed ENI refused",
                );
            }
            None
        }
        "CreateNetworkAclEntry" => {
            let acl = form_value(text, "NetworkAclId")?;
            let egress = form_value(text, "Egress")? == "true";
            let number: i32 = form_value(text, "RuleNumber")?.parse().ok()?;
            let ipv6 = form_value(text, "Ipv6CidrBlock").is_some();
            let entries = acl_entries(request, &acl).await;
            if entries
                .iter()
                .any(|e| e.egress == egress && e.rule_number == number)
            {
                return refusal(
                    "NetworkAclEntryAlreadyExists",
                    format!("The network acl entry identified by {number} already exists."),
                    "ACL rule number taken",
                );
            }
            let family: Vec<&Entry> = entries
                .iter()
                .filter(|e| e.egress == egress && e.ipv6 == ipv6)
                .collect();
            // AWS lists (and counts) a default rule per direction and family; moto gives
            // custom ACLs none.
            let has_default = family.iter().any(|e| e.rule_number >= 32767);
            let used = family.len() + usize::from(!has_default);
            if used >= request.config.nacl_entry_limit {
                return refusal(
                    "NetworkAclEntryLimitExceeded",
                    format!(
                        "The maximum number of network ACL entries ({}) has been reached.",
                        request.config.nacl_entry_limit
                    ),
                    "ACL quota",
                );
            }
            None
        }
        // The template grants these only on roles tagged for revoke-sessions: AWS refuses the
        // rest (moto evaluates no policy).
        "PutRolePolicy" | "DeleteRolePolicy" => {
            let role = form_value(text, "RoleName")?;
            let form = format!("Action=ListRoleTags&Version=2010-05-08&RoleName={role}");
            if revocable(&upstream_query(request, form).await) {
                return None;
            }
            refusal(
                "AccessDenied",
                format!("User is not authorized to perform: iam:{} on resource: role {role} because no identity-based policy allows the iam:{} action", request.operation, request.operation),
                "role not tagged revocable",
            )
        }
        _ => None,
    }
}

/// A ListRoleTags answer carries `incident-responder:revocable` = `true`.
fn revocable(xml: &str) -> bool {
    xml.split("<member>").any(|member| {
        tag_value(member, "Key") == Some("incident-responder:revocable")
            && tag_value(member, "Value") == Some("true")
    })
}

/// After forwarding: AWS's answer where moto's differs.
pub(super) async fn rewrite(
    request: &Request<'_>,
    sent: &Bytes,
    response: Response<Full<Bytes>>,
) -> Answer {
    let ok = response.status() == StatusCode::OK;
    match request.operation {
        "DescribeNetworkInterfaces" if ok => {
            let bytes = super::body_of(response).await;
            let rewritten = mark_task_enis_requester_managed(&String::from_utf8_lossy(&bytes));
            (xml(rewritten), None)
        }
        "DescribeNetworkAcls" if ok => {
            let bytes = super::body_of(response).await;
            let (rewritten, added) = add_default_entries(&String::from_utf8_lossy(&bytes));
            (
                xml(rewritten),
                added.then(|| "default rules listed".to_string()),
            )
        }
        "DescribeTasks" if ok => {
            let bytes = super::body_of(response).await;
            let (rewritten, added) = add_missing_failures(sent, &bytes);
            let mut response = Response::new(Full::new(rewritten));
            response.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            (
                response,
                added.then(|| "MISSING failures added".to_string()),
            )
        }
        "DescribeServices" if ok => {
            let bytes = super::body_of(response).await;
            let rewritten = steady_running_counts(&bytes);
            let mut response = Response::new(Full::new(rewritten));
            response.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            (response, None)
        }
        "StopTask" if response.status().is_server_error() => (
            error_response(
                request.protocol,
                request.service,
                400,
                "InvalidParameterException",
                "The referenced task was not found.",
            ),
            Some("unknown task".to_string()),
        ),
        _ => (response, None),
    }
}

fn xml(body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/xml"),
    );
    response
}

/// Ask the emulator directly (not through the proxy) with the caller's credentials scope (so
/// the same service answers).
async fn upstream_query(request: &Request<'_>, form: String) -> String {
    let state = request.state;
    let Ok(uri) = format!("{}/", state.upstream).parse::<hyper::Uri>() else {
        return String::new();
    };
    let mut builder = hyper::Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(auth) = request.parts.headers.get("authorization") {
        builder = builder.header("authorization", auth);
    }
    let Ok(query) = builder.body(Full::new(Bytes::from(form))) else {
        return String::new();
    };
    match state.client.request(query).await {
        Ok(response) => response
            .into_body()
            .collect()
            .await
            .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn is_task_eni(request: &Request<'_>, eni: &str) -> bool {
    let form =
        format!("Action=DescribeNetworkInterfaces&Version=2016-11-15&NetworkInterfaceId.1={eni}");
    upstream_query(request, form).await.contains(MOTO_ECS_ENI)
}

/// One entry of an ACL, as far as numbering and the quota care.
#[derive(Debug, PartialEq)]
struct Entry {
    rule_number: i32,
    egress: bool,
    ipv6: bool,
}

async fn acl_entries(request: &Request<'_>, acl: &str) -> Vec<Entry> {
    let form = format!("Action=DescribeNetworkAcls&Version=2016-11-15&NetworkAclId.1={acl}");
    parse_entries(&upstream_query(request, form).await)
}

fn tag_value<'a>(item: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = item.find(&open)? + open.len();
    let end = item[start..].find(&format!("</{tag}>"))? + start;
    Some(&item[start..end])
}

fn parse_entries(xml: &str) -> Vec<Entry> {
    let Some(entries) = xml
        .split("<entrySet>")
        .nth(1)
        .and_then(|s| s.split("</entrySet>").next())
    else {
        return Vec::new();
    };
    entries
        .split("<item>")
        .skip(1)
        .filter_map(|item| {
            Some(Entry {
                rule_number: tag_value(item, "ruleNumber")?.parse().ok()?,
                egress: tag_value(item, "egress")? == "true",
                ipv6: item.contains("<ipv6CidrBlock>"),
            })
        })
        .collect()
}

/// Every ACL in a DescribeNetworkAcls answer gets the default deny rule per direction, as AWS
/// lists it, where moto left it out (custom ACLs).
fn add_default_entries(xml: &str) -> (String, bool) {
    let mut out = String::with_capacity(xml.len() + 512);
    let mut added = false;
    let mut rest = xml;
    while let Some(at) = rest.find("<entrySet") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let (set, remaining) = if let Some(stripped) = after.strip_prefix("<entrySet/>") {
            ("", stripped)
        } else if let Some(end) = after.find("</entrySet>") {
            let open_end = after.find('>').map(|i| i + 1).unwrap_or(0);
            (&after[open_end..end], &after[end + "</entrySet>".len()..])
        } else {
            out.push_str(after);
            return (out, added);
        };
        let present = parse_entries(&format!("<entrySet>{set}</entrySet>"));
        let mut entries = set.to_string();
        for egress in [false, true] {
            let has = present
                .iter()
                .any(|e| e.egress == egress && !e.ipv6 && e.rule_number >= 32767);
            if !has {
                added = true;
                entries.push_str(&format!(
                    "<item><ruleNumber>32767</ruleNumber><protocol>-1</protocol><ruleAction>deny</ruleAction><egress>{egress}</egress><cidrBlock>0.0.0.0/0</cidrBlock></item>"
                ));
            }
        }
        out.push_str("<entrySet>");
        out.push_str(&entries);
        out.push_str("</entrySet>");
        rest = remaining;
    }
    out.push_str(rest);
    (out, added)
}

/// AWS reports every ECS task ENI as requester-managed; moto does not.
fn mark_task_enis_requester_managed(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find(MOTO_ECS_ENI) {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let next_eni = after[MOTO_ECS_ENI.len()..]
            .find(MOTO_ECS_ENI)
            .map(|i| i + MOTO_ECS_ENI.len())
            .unwrap_or(after.len());
        let (this_eni, remaining) = after.split_at(next_eni);
        out.push_str(&this_eni.replacen(
            "<requesterManaged>false</requesterManaged>",
            "<requesterManaged>true</requesterManaged>",
            1,
        ));
        rest = remaining;
    }
    out.push_str(rest);
    out
}

/// A steady service runs its desired count (moto reports none running).
fn steady_running_counts(response: &[u8]) -> Bytes {
    let Ok(mut response) = serde_json::from_slice::<Value>(response) else {
        return Bytes::copy_from_slice(response);
    };
    if let Some(services) = response["services"].as_array_mut() {
        for service in services {
            service["runningCount"] = service["desiredCount"].clone();
            service["pendingCount"] = 0.into();
        }
    }
    Bytes::from(response.to_string())
}

/// AWS answers DescribeTasks for an unknown or long-gone task with `failures[].reason = MISSING`.
fn add_missing_failures(request: &[u8], response: &[u8]) -> (Bytes, bool) {
    let (Ok(request), Ok(mut response)) = (
        serde_json::from_slice::<Value>(request),
        serde_json::from_slice::<Value>(response),
    ) else {
        return (Bytes::copy_from_slice(response), false);
    };
    let asked: Vec<String> = request["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let known: Vec<String> = response["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<Value> = asked
        .iter()
        .filter(|arn| {
            !known
                .iter()
                .any(|k| k == *arn || k.ends_with(&format!("/{arn}")))
        })
        .map(|arn| serde_json::json!({"arn": arn, "reason": "MISSING"}))
        .collect();
    if missing.is_empty() {
        return (Bytes::from(response.to_string()), false);
    }
    let failures = response["failures"].as_array().cloned().unwrap_or_default();
    response["failures"] = Value::Array(failures.into_iter().chain(missing).collect());
    (Bytes::from(response.to_string()), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requester_managed_is_set_only_on_task_enis() {
        let xml = "<item><description>moto ECS</description><groupSet><item><groupId>sg-1</groupId></item></groupSet><requesterManaged>false</requesterManaged></item>\
                   <item><description>web</description><requesterManaged>false</requesterManaged></item>";
        let out = mark_task_enis_requester_managed(xml);
        assert_eq!(
            out.matches("<requesterManaged>true</requesterManaged>")
                .count(),
            1
        );
        assert!(out.ends_with(
            "<description>web</description><requesterManaged>false</requesterManaged></item>"
        ));
    }

    #[test]
    fn only_the_revocable_tag_with_value_true_counts() {
        let tagged = "<ListRoleTagsResponse><ListRoleTagsResult><Tags><member><Key>team</Key><Value>true</Value></member><member>\n<Key>incident-responder:revocable</Key>\n<Value>true</Value></member></Tags></ListRoleTagsResult></ListRoleTagsResponse>";
        assert!(revocable(tagged));
        assert!(!revocable(&tagged.replace(
            "<Value>true</Value></member></Tags>",
            "<Value>no</Value></member></Tags>"
        )));
        assert!(!revocable(
            "<ErrorResponse><Error><Code>NoSuchEntity</Code></Error></ErrorResponse>"
        ));
    }

    #[test]
    fn missing_tasks_become_failures() {
        let request = br#"{"cluster":"c","tasks":["arn:task/c/1","arn:task/c/2"]}"#;
        let response = br#"{"tasks":[{"taskArn":"arn:task/c/1"}],"failures":[]}"#;
        let (out, added) = add_missing_failures(request, response);
        assert!(added);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["failures"][0]["arn"], "arn:task/c/2");
        assert_eq!(value["failures"][0]["reason"], "MISSING");
    }

    #[test]
    fn default_rules_are_listed_for_custom_acls() {
        let custom = "<networkAclSet><item><networkAclId>acl-1</networkAclId><entrySet><item><ruleNumber>100</ruleNumber><egress>true</egress><cidrBlock>0.0.0.0/0</cidrBlock></item></entrySet></item>\
                      <item><networkAclId>acl-2</networkAclId><entrySet/></item></networkAclSet>";
        let (out, added) = add_default_entries(custom);
        assert!(added);
        assert_eq!(
            out.matches("<ruleNumber>32767</ruleNumber>").count(),
            4,
            "{out}"
        );
        let first = parse_entries(&out);
        assert_eq!(first.len(), 3, "acl-1: its rule and two defaults");
        let (again, added_again) = add_default_entries(&out);
        assert!(!added_again);
        assert_eq!(again, out);
    }
}
