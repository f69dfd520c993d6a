//! Containers' CRI log files: the shim writes them ([`cri_timestamp`] stamps
//! each record), the node's log server reads them the way the kubelet serves
//! them to `kubectl logs`: one record per line, `<RFC 3339 time> <stream> <F|P>
//! <content>`, rendered as the content (a newline after full records),
//! optionally prefixed by the time, filtered by `sinceSeconds`, cut to the
//! last `tailLines` and to `limitBytes`.
//!
//! A container's files are `<pod dir>/logs/<container>/<attempt>.log`: the
//! highest attempt is the current instance, the one before it the previous
//! (`kubectl logs --previous`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What `kubectl logs` asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming until the container ends (`-f`).
    pub follow: bool,
    /// The previous instance (`--previous`).
    pub previous: bool,
    /// Only the last N lines (`--tail`).
    pub tail_lines: Option<usize>,
    /// Prefix each line with its time (`--timestamps`).
    pub timestamps: bool,
    /// Only records at or after this CRI timestamp (`--since`, `--since-time`).
    pub since: Option<String>,
    /// Stop after this many bytes (`--limit-bytes`).
    pub limit_bytes: Option<u64>,
}

/// One record of a CRI log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The time, as written (`2006-01-02T15:04:05.000000000Z`).
    pub timestamp: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// A `P` record: the line goes on in the next record.
    pub partial: bool,
    /// The text, without the newline.
    pub content: &'a [u8],
}

/// Formats `t` as the CRI log timestamp `2006-01-02T15:04:05.000000000Z`.
pub fn cri_timestamp(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

/// Parses one line (without its `\n`) of a CRI log file.
#[must_use]
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    Some(Record {
        timestamp,
        stream,
        partial: tag.first() == Some(&b'P'),
        content,
    })
}

/// A CRI timestamp as the kubelet prints it with `--timestamps`
/// (RFC 3339 with nanoseconds, trailing zeros dropped).
#[must_use]
pub fn display_timestamp(ts: &str) -> String {
    let Some((secs, frac)) = ts.strip_suffix('Z').and_then(|t| t.split_once('.')) else {
        return ts.to_owned();
    };
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{secs}Z")
    } else {
        format!("{secs}.{frac}Z")
    }
}

/// Appends `record` to `out` as `kubectl logs` shows it.
pub fn render(record: &Record<'_>, timestamps: bool, out: &mut Vec<u8>) {
    if timestamps {
        out.extend_from_slice(display_timestamp(record.timestamp).as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(record.content);
    if !record.partial {
        out.push(b'\n');
    }
}

/// Splits a byte stream into lines, keeping an unfinished last line for
/// the next read (a record being written while we read).
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds `data`; returns the lines it completed (without `\n`).
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(data);
        let Some(last) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.pending.split_off(last + 1);
        let done = std::mem::replace(&mut self.pending, rest);
        done[..last]
            .split(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }
}

/// Renders the lines `kubectl logs` gets first: those at or after
/// `since`, then the last `tail_lines` of them.
#[must_use]
pub fn render_initial(lines: &[Vec<u8>], opts: &LogOptions) -> Vec<u8> {
    let records: Vec<Record<'_>> = lines
        .iter()
        .filter_map(|l| parse_record(l))
        .filter(|r| opts.since.as_deref().is_none_or(|s| r.timestamp >= s))
        .collect();
    let skip = opts
        .tail_lines
        .map_or(0, |n| records.len().saturating_sub(n));
    let mut out = Vec::new();
    for r in &records[skip..] {
        render(r, opts.timestamps, &mut out);
    }
    out
}

/// Renders lines that arrived while following.
#[must_use]
pub fn render_lines(lines: &[Vec<u8>], opts: &LogOptions) -> Vec<u8> {
    let mut out = Vec::new();
    for r in lines.iter().filter_map(|l| parse_record(l)) {
        if opts.since.as_deref().is_none_or(|s| r.timestamp >= s) {
            render(&r, opts.timestamps, &mut out);
        }
    }
    out
}

/// The log files of one container (`<dir>/<attempt>.log`), oldest first.
#[must_use]
pub fn log_files(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let attempt = name.to_str()?.strip_suffix(".log")?.parse().ok()?;
            Some((attempt, e.path()))
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &[u8] = b"2026-01-01T00:00:01.000000000Z stdout F one\n\
2026-01-01T00:00:02.500000000Z stderr F two\n\
2026-01-01T00:00:03.000000000Z stdout P thr\n\
2026-01-01T00:00:03.000000001Z stdout F ee\n\
2026-01-01T00:00:04.000000000Z stdout F \n";

    fn lines() -> Vec<Vec<u8>> {
        LineSplitter::default().push(FILE)
    }

    #[test]
    fn timestamp_format() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_136_214_245, 5);
        assert_eq!(cri_timestamp(t), "2006-01-02T15:04:05.000000005Z");
    }

    #[test]
    fn renders_content_and_joins_partial_records() {
        let out = render_initial(&lines(), &LogOptions::default());
        assert_eq!(out, b"one\ntwo\nthree\n\n");
    }

    #[test]
    fn timestamps_as_the_kubelet_prints_them() {
        let opts = LogOptions {
            timestamps: true,
            tail_lines: Some(3),
            ..LogOptions::default()
        };
        let out = String::from_utf8(render_initial(&lines(), &opts)).unwrap_or_default();
        assert_eq!(
            out,
            "2026-01-01T00:00:03Z thr2026-01-01T00:00:03.000000001Z ee\n2026-01-01T00:00:04Z \n"
        );
    }

    #[test]
    fn tail_and_since() {
        let tail = LogOptions {
            tail_lines: Some(1),
            ..LogOptions::default()
        };
        assert_eq!(render_initial(&lines(), &tail), b"\n");
        let none = LogOptions {
            tail_lines: Some(0),
            ..LogOptions::default()
        };
        assert_eq!(render_initial(&lines(), &none), b"");
        let since = LogOptions {
            since: Some("2026-01-01T00:00:02.000000000Z".into()),
            ..LogOptions::default()
        };
        assert_eq!(render_initial(&lines(), &since), b"two\nthree\n\n");
    }

    #[test]
    fn splitter_keeps_unfinished_lines() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"2026 stdout F a").is_empty());
        assert_eq!(s.push(b"b\n2026 std"), vec![b"2026 stdout F ab".to_vec()]);
        assert_eq!(s.push(b"err F c\n"), vec![b"2026 stderr F c".to_vec()]);
    }

    #[test]
    fn files_sort_by_attempt() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for name in ["10.log", "2.log", "0.log", "junk"] {
            std::fs::write(dir.path().join(name), "")?;
        }
        let attempts: Vec<u32> = log_files(dir.path()).iter().map(|(a, _)| *a).collect();
        assert_eq!(attempts, [0, 2, 10]);
        assert!(log_files(&dir.path().join("missing")).is_empty());
        Ok(())
    }
}
