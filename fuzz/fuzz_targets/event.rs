//! Any bytes as a received event, and as a file of events: an error or a value, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use responder::event::{parse_event, parse_value, split_input};

fuzz_target!(|data: &[u8]| {
    let _ = parse_event(data);
    if let Ok(values) = split_input(data) {
        for value in values {
            let _ = parse_value(value);
        }
    }
});
