//! Positions as users type them: `earliest`, `latest`, or `SEGMENT/ENTRY`.

use anyhow::{Result, bail};
use woodpecker_client::LogMessageId;

/// Parses a start position for a reader: `earliest`, `latest` or `SEGMENT/ENTRY`.
pub fn parse_start(text: &str) -> Result<LogMessageId> {
    match text.trim().to_ascii_lowercase().as_str() {
        "earliest" => Ok(LogMessageId::EARLIEST),
        "latest" => Ok(LogMessageId::LATEST),
        _ => parse_exact(text),
    }
}

/// Parses a concrete position `SEGMENT/ENTRY` with non-negative ids.
pub fn parse_exact(text: &str) -> Result<LogMessageId> {
    let expected = "expected SEGMENT/ENTRY with non-negative integers, e.g. 0/42";
    let Some((seg, entry)) = text.trim().split_once('/') else {
        bail!("invalid position {text:?}: {expected}");
    };
    let parse = |part: &str, what: &str| -> Result<i64> {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            bail!("invalid position {text:?}: {what} {part:?} is not a non-negative integer ({expected})");
        }
        part.parse::<i64>().map_err(|e| anyhow::anyhow!("invalid position {text:?}: {what} {part:?}: {e}"))
    };
    let id = LogMessageId::new(parse(seg, "segment")?, parse(entry, "entry")?);
    if id.is_latest() {
        bail!("invalid position {text:?}: that is the LATEST sentinel; write `latest`");
    }
    Ok(id)
}

/// Shows a start position the way it was asked for.
pub fn describe(id: LogMessageId) -> String {
    if id == LogMessageId::LATEST {
        "latest".to_owned()
    } else if id == LogMessageId::EARLIEST {
        "earliest".to_owned()
    } else {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_and_pairs_parse() {
        assert_eq!(parse_start("earliest").ok(), Some(LogMessageId::EARLIEST));
        assert_eq!(parse_start("LATEST").ok(), Some(LogMessageId::LATEST));
        assert_eq!(parse_start("3/14").ok(), Some(LogMessageId::new(3, 14)));
        assert_eq!(parse_exact(" 0/0 ").ok(), Some(LogMessageId::new(0, 0)));
    }

    #[test]
    fn malformed_positions_are_refused_with_the_input_in_the_message() {
        for bad in ["", "3", "3/", "/4", "-1/0", "0/-1", "a/b", "1/2/3", "0x1/2", "99999999999999999999/0", "1 2"] {
            match parse_start(bad) {
                Ok(id) => panic!("{bad:?} parsed as {id}"),
                Err(e) => assert!(e.to_string().contains("invalid position"), "{bad:?}: {e}"),
            }
        }
        assert!(parse_exact("earliest").is_err());
        assert!(parse_exact(&format!("{0}/{0}", i64::MAX)).is_err());
    }
}
