//! Where each key and list item of a playbook is, so a problem found after parsing (a wrong
//! value, an action the rule's targets cannot take, a duplicate name) points at its own line.
//! serde_yaml_ng locates only the first syntax or type error of a document; the positions come
//! from a second, event-level read of the same text.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// One step of a path into a playbook: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    /// A map key.
    Key(String),
    /// A list index (0-based).
    Index(usize),
}

impl From<&str> for Segment {
    fn from(key: &str) -> Self {
        Segment::Key(key.to_string())
    }
}

impl From<usize> for Segment {
    fn from(index: usize) -> Self {
        Segment::Index(index)
    }
}

/// A path into a playbook document, e.g. `rules[2].match.min_severity`.
pub(crate) type YamlPath = Vec<Segment>;

/// `rules[2].match.min_severity`, as a user reads it.
pub(crate) fn display(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) if out.is_empty() => out.push_str(key),
            Segment::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// 1-based line and column of every map key and list item, by path.
#[derive(Debug, Default)]
pub(crate) struct Positions {
    at: HashMap<YamlPath, (usize, usize)>,
}

enum Frame {
    Map { path: YamlPath, key: Option<String> },
    Seq { path: YamlPath, next: usize },
}

impl Positions {
    /// Index a document. A text the event reader cannot read yields what was read before the
    /// problem (serde_yaml_ng reports the problem itself).
    pub(crate) fn of(text: &str) -> Positions {
        let mut at = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            let here = (span.start.line(), span.start.col() + 1);
            // The path of the node this event starts, if it starts one.
            let starts_node = matches!(
                event,
                Event::Scalar(..)
                    | Event::Alias(_)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
            );
            let mut node_path: Option<YamlPath> = None;
            if starts_node {
                match stack.last_mut() {
                    None => node_path = Some(Vec::new()),
                    Some(Frame::Seq { path, next }) => {
                        let mut item = path.clone();
                        item.push(Segment::Index(*next));
                        *next += 1;
                        at.insert(item.clone(), here);
                        node_path = Some(item);
                    }
                    Some(Frame::Map { path, key }) => match key.take() {
                        // A value: its position is its key's (recorded with the key).
                        Some(k) => {
                            let mut value = path.clone();
                            value.push(Segment::Key(k));
                            node_path = Some(value);
                        }
                        // A key: record where it is; complex keys are not indexed.
                        None => {
                            if let Event::Scalar(text, ..) = &event {
                                let mut entry = path.clone();
                                entry.push(Segment::Key(text.to_string()));
                                at.insert(entry, here);
                                *key = Some(text.to_string());
                                continue;
                            }
                            *key = Some(String::new());
                        }
                    },
                }
            }
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map {
                    path: node_path.unwrap_or_default(),
                    key: None,
                }),
                Event::SequenceStart(..) => stack.push(Frame::Seq {
                    path: node_path.unwrap_or_default(),
                    next: 0,
                }),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Positions { at }
    }

    /// Where `path` is, or the nearest enclosing key or item that is indexed.
    pub(crate) fn find(&self, path: &[Segment]) -> Option<(usize, usize)> {
        (0..=path.len())
            .rev()
            .find_map(|len| self.at.get(&path[..len]).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segments: &[Segment]) -> Vec<Segment> {
        segments.to_vec()
    }

    #[test]
    fn keys_and_items_are_located() {
        let text = "rules:\n  - name: a\n    match:\n      min_severity: High\n    actions:\n      - isolate: {fallback: stop}\n      - notify\n  - {name: b, mode: enforce}\n";
        let p = Positions::of(text);
        let rules = || vec![Segment::from("rules")];
        assert_eq!(p.find(&rules()), Some((1, 1)));
        let first = [rules(), vec![0.into()]].concat();
        assert_eq!(p.find(&first), Some((2, 5)));
        let severity = [first.clone(), vec!["match".into(), "min_severity".into()]].concat();
        assert_eq!(p.find(&severity), Some((4, 7)));
        let notify = [first.clone(), vec!["actions".into(), 1.into()]].concat();
        assert_eq!(p.find(&notify), Some((7, 9)));
        let fallback = [
            first.clone(),
            vec![
                "actions".into(),
                0.into(),
                "isolate".into(),
                "fallback".into(),
            ],
        ]
        .concat();
        assert_eq!(p.find(&fallback), Some((6, 19)));
        let mode_b = path(&["rules".into(), 1.into(), "mode".into()]);
        assert_eq!(p.find(&mode_b), Some((8, 15)));
        // An unknown path falls back to the nearest known parent.
        let deeper = [severity, vec!["nope".into()]].concat();
        assert_eq!(p.find(&deeper), Some((4, 7)));
        assert_eq!(display(&notify), "rules[0].actions[1]");
    }

    #[test]
    fn broken_text_yields_what_was_read() {
        let p = Positions::of("rules:\n  - name: a\n   bad: [\n");
        assert_eq!(p.find(&["rules".into()]), Some((1, 1)));
    }
}
