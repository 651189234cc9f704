//! Every sample in `config/samples/` renders to exactly the objects in `tests/golden/<sample>.yaml`.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p woodpecker-operator --test render_golden`.

#[path = "render_support.rs"]
mod support;

use woodpecker_operator::render::{render, validate_cluster};

#[test]
fn every_sample_renders_to_its_golden_file() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let samples = support::samples();
    assert!(samples.len() >= 5, "expected at least 5 samples, found {}", samples.len());
    let mut stale = Vec::new();
    for (stem, cluster) in samples {
        validate_cluster(&cluster).unwrap_or_else(|e| panic!("sample {stem} fails validation: {e:?}"));
        let rendered = render(&cluster, &support::inputs_for(&cluster))
            .unwrap_or_else(|e| panic!("sample {stem} does not render: {e}"));
        let yaml = support::to_multi_doc_yaml(&rendered);
        let path = support::golden_dir().join(format!("{stem}.yaml"));
        if update {
            std::fs::create_dir_all(support::golden_dir()).expect("create golden dir");
            std::fs::write(&path, &yaml).expect("write golden file");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == yaml => {}
            Ok(on_disk) => {
                let first = on_disk.lines().zip(yaml.lines()).position(|(a, b)| a != b).unwrap_or(0);
                stale.push(format!(
                    "{stem}: first difference at line {}:\n  golden:   {:?}\n  rendered: {:?}",
                    first + 1,
                    on_disk.lines().nth(first),
                    yaml.lines().nth(first)
                ));
            }
            Err(e) => stale.push(format!("{stem}: {e}")),
        }
    }
    assert!(
        stale.is_empty(),
        "golden files differ (UPDATE_GOLDEN=1 cargo test -p woodpecker-operator --test render_golden):\n{}",
        stale.join("\n")
    );
}
