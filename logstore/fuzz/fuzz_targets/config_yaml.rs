//! `woodpecker.yaml` loading on arbitrary text: never panics; a config it accepts renders to commented YAML
//! that loads back to the same config, and an empty overlay changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use woodpecker_core::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::from_yaml_str(text) else { return };
    let rendered = config.to_commented_yaml().expect("an accepted config renders");
    let back = Config::from_yaml_str(&rendered).expect("a rendered config loads");
    assert_eq!(back, config, "rendered YAML loads back to a different config:\n{rendered}");
    let overlaid = Config::from_yaml_with_overlay(text, "").expect("an empty overlay changes nothing");
    assert_eq!(overlaid, config);
});
