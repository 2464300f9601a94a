//! Any text as a playbook file, alone and after the defaults (`extends: defaults`): a set or
//! located errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use responder::playbook::PlaybookSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = PlaybookSet::from_sources([("fuzz.yaml".to_string(), text.to_string())]) {
        // Rendering the errors is part of the path a user sees.
        let _ = errors.to_string();
    }
});
