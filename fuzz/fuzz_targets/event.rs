//! Any bytes as a received event, and as a file of events: an error or a value, never a panic;
//! and the one-pass read of a GuardDuty event agrees with the general path (the same incident
//! and evidence, or the same error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use responder::event::{parse_event, parse_through_value, parse_value, split_input, Inbound};

fn shown(parsed: Result<Inbound, responder::event::EventError>) -> String {
    match parsed {
        Ok(Inbound::Finding { incident, raw }) => format!("{incident:?} {}", raw.to_value()),
        Ok(other) => format!("{other:?}"),
        Err(error) => error.to_string(),
    }
}

fuzz_target!(|data: &[u8]| {
    let one_pass = shown(parse_event(data));
    if data.len() <= responder::event::MAX_EVENT_BYTES {
        assert_eq!(one_pass, shown(parse_through_value(data)));
    }
    if let Ok(values) = split_input(data) {
        for value in values {
            let _ = parse_value(value);
        }
    }
});
