//! The one list of actions. Everything that enumerates actions — the names playbooks use, the
//! parsed step ([`ActionSpec`]), the typed outputs ([`StepOutput`]), the JSON Schema, the
//! dispatch to `run` — is generated here from each action's [`Action`] implementation, so no
//! name table is written by hand. Adding an action is one line in the `registry!` call below.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::{Action, Earlier, Failure, Phase, StepContext};
use crate::incident::TargetKind;

macro_rules! registry {
    ($($variant:ident => $unit:ty),+ $(,)?) => {
        /// The actions a playbook can name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ActionName {
            $(
                #[doc = concat!("`", stringify!($unit), "`.")]
                $variant,
            )+
        }

        impl ActionName {
            /// Every action, in registry (and phase) order.
            pub const ALL: &'static [ActionName] = &[$(ActionName::$variant),+];

            /// The name playbooks use.
            pub fn name(self) -> &'static str {
                match self { $(ActionName::$variant => <$unit as Action>::NAME,)+ }
            }

            /// When it runs.
            pub fn phase(self) -> Phase {
                match self { $(ActionName::$variant => <$unit as Action>::PHASE,)+ }
            }

            /// Why a step of this kind is in a plan.
            pub fn purpose(self) -> &'static str {
                match self { $(ActionName::$variant => <$unit as Action>::PURPOSE,)+ }
            }

            /// Containment changes the workload; the exemption guardrail removes these steps.
            pub fn is_containment(self) -> bool {
                match self { $(ActionName::$variant => <$unit as Action>::CONTAINMENT,)+ }
            }

            /// The kinds of workload it can act on.
            pub fn targets(self) -> &'static [TargetKind] {
                match self { $(ActionName::$variant => <$unit as Action>::TARGETS,)+ }
            }

            /// The IAM actions its `run` may call.
            pub fn permissions(self) -> &'static [&'static str] {
                match self { $(ActionName::$variant => <$unit as Action>::PERMISSIONS,)+ }
            }
        }

        /// One step of a rule: an action with its typed parameters. Written as `- evidence`
        /// or `- isolate: {fallback: stop}`.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ActionSpec {
            $(
                #[doc = concat!("`", stringify!($unit), "` with its parameters.")]
                $variant(<$unit as Action>::Params),
            )+
        }

        impl ActionSpec {
            /// Which action.
            pub fn name(&self) -> ActionName {
                match self { $(ActionSpec::$variant(_) => ActionName::$variant,)+ }
            }

            /// The parameters as JSON, for reports.
            pub fn params_json(&self) -> serde_json::Value {
                let value = match self { $(ActionSpec::$variant(p) => serde_json::to_value(p),)+ };
                value.unwrap_or(serde_json::Value::Null)
            }

            /// Why a step with these parameters is in a plan.
            pub fn reason(&self) -> String {
                match self { $(ActionSpec::$variant(p) => <$unit as Action>::reason(p),)+ }
            }

            /// The action with its default parameters (`- evidence`).
            pub fn with_defaults(name: ActionName) -> ActionSpec {
                match name { $(ActionName::$variant => ActionSpec::$variant(Default::default()),)+ }
            }

            /// A reason not to run given what earlier phases did. Pure.
            pub fn withheld(&self, earlier: &Earlier) -> Option<String> {
                match self { $(ActionSpec::$variant(p) => <$unit as Action>::withheld(p, earlier),)+ }
            }

            fn with_params<'de, A: MapAccess<'de>>(
                name: ActionName,
                map: &mut A,
            ) -> Result<ActionSpec, A::Error> {
                // `- evidence:` (a null value) means "defaults", like `- evidence`.
                Ok(match name {
                    $(ActionName::$variant => ActionSpec::$variant(
                        map.next_value::<Option<<$unit as Action>::Params>>()?.unwrap_or_default(),
                    ),)+
                })
            }

            fn schema_variants(generator: &mut SchemaGenerator) -> Vec<Schema> {
                vec![$({
                    let params = generator.subschema_for::<<$unit as Action>::Params>();
                    let mut properties = serde_json::Map::new();
                    let mut params = params.to_value();
                    if let Some(object) = params.as_object_mut() {
                        object.insert(
                            "description".to_string(),
                            format!("Parameters of `{}`.", <$unit as Action>::NAME).into(),
                        );
                    }
                    properties.insert(<$unit as Action>::NAME.to_string(), params);
                    json_schema!({
                        "type": "object",
                        "description": <$unit as Action>::PURPOSE,
                        "properties": properties,
                        "required": [<$unit as Action>::NAME],
                        "additionalProperties": false,
                    })
                }),+]
            }
        }

        /// What a step did, typed per action; serialised once, in the report and the ledger.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum StepOutput {
            $(
                #[doc = concat!("What `", stringify!($unit), "` did.")]
                $variant(<$unit as Action>::Output),
            )+
        }

        impl StepOutput {
            /// One line for the notification and the text report.
            pub fn summary(&self) -> String {
                match self { $(StepOutput::$variant(o) => <$unit as Action>::summary(o),)+ }
            }
        }

        /// Run a step through its action.
        pub(crate) async fn run_action(
            spec: &ActionSpec,
            ctx: &StepContext<'_>,
        ) -> Result<StepOutput, Failure<StepOutput>> {
            match spec {
                // Boxed: an action's future holds its concurrent calls' futures side by side
                // (large in a debug build), and stays off the poller's stack this way.
                $(ActionSpec::$variant(params) => Box::pin(<$unit as Action>::run(ctx, params))
                    .await
                    .map(StepOutput::$variant)
                    .map_err(|f| f.map(StepOutput::$variant)),)+
            }
        }

        /// A step's output as an earlier invocation recorded it in the ledger.
        pub(crate) fn output_from_ledger(
            name: ActionName,
            recorded: &serde_json::Value,
        ) -> Option<StepOutput> {
            match name {
                $(ActionName::$variant => serde_json::from_value(recorded.clone())
                    .ok()
                    .map(StepOutput::$variant),)+
            }
        }
    };
}

registry! {
    Isolate => super::isolate::Isolate,
    DrainInstance => super::drain::DrainInstance,
    RevokeSessions => super::revoke_sessions::RevokeSessions,
    Evidence => super::evidence::Evidence,
    SnapshotVolumes => super::snapshot::SnapshotVolumes,
    ProtectInstance => super::protect::ProtectInstance,
    Tag => super::tag::Tag,
    Deregister => super::deregister::Deregister,
    HoldDeployment => super::hold::HoldDeployment,
    Stop => super::stop::Stop,
    ScaleService => super::scale::ScaleService,
    Notify => super::notify::Notify,
}

impl ActionName {
    /// The action with this playbook name.
    pub fn parse(text: &str) -> Option<ActionName> {
        ActionName::ALL.iter().copied().find(|a| a.name() == text)
    }

    /// Every playbook name, in registry order.
    pub fn names() -> &'static [&'static str] {
        static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
        NAMES.get_or_init(|| ActionName::ALL.iter().map(|a| a.name()).collect())
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ActionName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ActionName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        known(&text)
    }
}

fn known<E: de::Error>(name: &str) -> Result<ActionName, E> {
    ActionName::parse(name).ok_or_else(|| E::unknown_variant(name, ActionName::names()))
}

impl JsonSchema for ActionName {
    fn schema_name() -> Cow<'static, str> {
        "ActionName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names = ActionName::names();
        json_schema!({
            "description": "An action with its default parameters.",
            "type": "string",
            "enum": names,
        })
    }
}

impl Serialize for ActionSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.name().name(), &self.params_json())?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for ActionSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpecVisitor;

        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = ActionSpec;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an action name (e.g. `evidence`) or one action name with its parameters (e.g. `isolate: {fallback: stop}`)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ActionSpec, E> {
                Ok(ActionSpec::with_defaults(known(v)?))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ActionSpec, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::invalid_length(0, &self));
                };
                let spec = ActionSpec::with_params(known(&key)?, &mut map)?;
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a step names exactly one action; `{key}` is followed by `{extra}` (start a new `- ` item for another action)"
                    )));
                }
                Ok(spec)
            }
        }

        deserializer.deserialize_any(SpecVisitor)
    }
}

impl JsonSchema for ActionSpec {
    fn schema_name() -> Cow<'static, str> {
        "Action".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut variants = vec![generator.subschema_for::<ActionName>()];
        variants.extend(ActionSpec::schema_variants(generator));
        json_schema!({
            "description": "An action name, or one action name mapped to its parameters.",
            "oneOf": variants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_phases_follow_the_registry_order() {
        for pair in ActionName::ALL.windows(2) {
            assert!(pair[0].phase() <= pair[1].phase(), "{pair:?}");
        }
        for &action in ActionName::ALL {
            assert_eq!(ActionName::parse(action.name()), Some(action));
            assert_eq!(ActionSpec::with_defaults(action).name(), action);
            let json = serde_json::to_value(action).unwrap();
            assert_eq!(json, action.name());
            assert!(!action.purpose().is_empty());
        }
    }

    #[test]
    fn spec_serialises_as_the_playbook_writes_it() {
        let spec: ActionSpec = serde_yaml_ng::from_str("stop: {force: true}").unwrap();
        assert_eq!(serde_json::to_value(&spec).unwrap()["stop"]["force"], true);
        let bare: ActionSpec = serde_yaml_ng::from_str("evidence").unwrap();
        assert_eq!(bare.name(), ActionName::Evidence);
    }
}
