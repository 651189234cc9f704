//! The metrics reference pages of the book (`docs/src/reference/metrics-*.md`) as a table: shared by the
//! server's and the operator's `metrics_reference` tests, which include this file by path (the two crates
//! share no dependency where it could live).

/// Renders the Prometheus text exposition `text` as a table: one row per metric family with its name as
/// scraped, type, labels and help. Every family must hold a sample for its labels to show.
pub fn metrics_table(text: &str) -> String {
    struct Family {
        name: String,
        kind: String,
        help: String,
        labels: Vec<String>,
        samples: Vec<String>,
    }
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.push(Family {
                name: name.to_owned(),
                kind: String::new(),
                help: help.to_owned(),
                labels: Vec::new(),
                samples: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let kind = rest.split_once(' ').map_or("", |(_, k)| k);
            if let Some(f) = families.last_mut() {
                f.kind = kind.to_owned();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let Some(f) = families.last_mut() else { continue };
            let (sample, labels) = match line.split_once('{') {
                Some((name, rest)) => (name, rest.split_once('}').map_or("", |(l, _)| l)),
                None => (line.split_once(' ').map_or(line, |(n, _)| n), ""),
            };
            if !f.samples.iter().any(|s| s == sample) {
                f.samples.push(sample.to_owned());
            }
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let label = pair.split_once('=').map_or(pair, |(k, _)| k).to_owned();
                if label != "le" && !f.labels.contains(&label) {
                    f.labels.push(label);
                }
            }
        }
    }
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for f in families {
        let scraped: Vec<String> = f.samples.iter().map(|s| format!("`{s}`")).collect();
        let labels: Vec<String> = f.labels.iter().map(|l| format!("`{l}`")).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            if scraped.is_empty() { format!("`{}`", f.name) } else { scraped.join("<br>") },
            f.kind,
            labels.join(", "),
            f.help.replace('|', "\\|")
        ));
    }
    out
}
