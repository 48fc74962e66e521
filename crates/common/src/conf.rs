//! The configuration registry: every `ember.*` key Ember reads, with its
//! default and meaning, in one table ([`KNOWN_KEYS`]). Values are strings
//! (as in Spark) parsed by typed getters; an unparsable value is an error
//! naming the key, never a silent fallback.
//!
//! Sources, later ones winning: defaults, the `EMBER_CONF` environment
//! variable (`key=value` pairs separated by whitespace or commas), then
//! explicit `set` calls on the builder.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::time::Duration;

/// One documented configuration key.
#[derive(Debug, Clone, Copy)]
pub struct ConfEntry {
    pub key: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every key Ember reads. The README's configuration table is generated from this.
pub const KNOWN_KEYS: &[ConfEntry] = &[
    ConfEntry { key: "ember.app.name", default: "ember", doc: "Application name shown in logs and events." },
    ConfEntry {
        key: "ember.default.parallelism",
        default: "(cores)",
        doc: "Partitions used by shuffles and parallelize when none is given; defaults to the total task slots.",
    },
    ConfEntry {
        key: "ember.task.maxFailures",
        default: "4",
        doc: "Attempts of one task before its job is aborted; `local[N,F]` sets it to F.",
    },
    ConfEntry {
        key: "ember.locality.wait",
        default: "3s",
        doc: "How long a task waits for a free core on an executor caching the partition it reads before it runs elsewhere (and recomputes it), as Spark's spark.locality.wait.",
    },
    ConfEntry {
        key: "ember.scheduler.shortTaskQueueDepth",
        default: "256",
        doc: "Tasks one executor core may hold (one running, the rest queued) once a stage's last 8 tasks each ran in under 1 ms; 1 = always one task per free core, as in Spark.",
    },
    ConfEntry {
        key: "ember.scheduler.tinyTaskThreshold",
        default: "10us",
        doc: "Tasks whose stage code ran its last 8 tasks each in less than this are tiny: a set of them fills one executor (one task running and one queued per core) before the next, since sending a task that short to another executor process costs more than running it after another. 0 = never pack.",
    },
    ConfEntry {
        key: "ember.spinWait",
        default: "1ms",
        doc: "How long a driver or executor thread that has just handled a message polls for the next before it sleeps (yielding its CPU between polls); waking a sleeping thread costs 10-30 us on a virtual machine. 0 = always sleep.",
    },
    ConfEntry {
        key: "ember.rpc.unixSocket",
        default: "true",
        doc: "Whether local-cluster executors reach the driver over a Unix domain socket in the application directory instead of loopback TCP (a cross-process round trip costs about half as much).",
    },
    ConfEntry {
        key: "ember.rpc.sharedMemory",
        default: "true",
        doc: "Whether local-cluster executors (with ember.rpc.unixSocket) also exchange control frames with the driver through a shared-memory ring, so that while both sides are awake, sending and polling take no system calls; larger frames, waking a sleeping reader and noticing the end of a connection still use the socket.",
    },
    ConfEntry {
        key: "ember.local.dir",
        default: "(system temp dir)",
        doc: "Directory for shuffle files and spills; a per-application subdirectory is created and removed.",
    },
    ConfEntry { key: "ember.shuffle.compress", default: "true", doc: "Compress shuffle blocks with lz4." },
    ConfEntry {
        key: "ember.shuffle.blockSize",
        default: "64k",
        doc: "Uncompressed size of one checksummed shuffle block.",
    },
    ConfEntry {
        key: "ember.memory.budget",
        default: "4g",
        doc: "Bytes an executor may hold in shuffle and aggregation buffers before spilling to disk.",
    },
    ConfEntry {
        key: "ember.ui.showConsoleProgress",
        default: "true",
        doc: "Draw a progress bar on stderr (only when it is a terminal) for stages running longer than 500 ms.",
    },
    ConfEntry {
        key: "ember.driver.maxResultSize",
        default: "1g",
        doc: "Limit on the total size of results collected to the driver by one job; 0 = unlimited.",
    },
    ConfEntry {
        key: "ember.task.maxDirectResultSize",
        default: "1m",
        doc: "Results up to this size travel inside the task status update.",
    },
    ConfEntry {
        key: "ember.rdd.limit.scaleUpFactor",
        default: "4",
        doc: "How much `take` widens the set of scanned partitions after each round.",
    },
    ConfEntry {
        key: "ember.stage.maxConsecutiveAttempts",
        default: "4",
        doc: "Consecutive fetch-failed attempts of one stage before its job is aborted.",
    },
    ConfEntry {
        key: "ember.network.timeout",
        default: "120s",
        doc: "An executor silent for this long is declared lost.",
    },
    ConfEntry {
        key: "ember.executor.heartbeatInterval",
        default: "10s",
        doc: "How often executors report to the driver.",
    },
];

/// A set of configuration values.
#[derive(Clone, Debug, Default)]
pub struct Conf {
    values: BTreeMap<String, String>,
}

impl Conf {
    /// An empty configuration (defaults apply to every key).
    pub fn new() -> Self {
        Conf::default()
    }

    /// Defaults overlaid with the `EMBER_CONF` environment variable.
    pub fn from_env() -> Result<Self> {
        let mut conf = Conf::new();
        if let Ok(spec) = std::env::var("EMBER_CONF") {
            conf.merge_spec(&spec)?;
        }
        Ok(conf)
    }

    /// Parses `key=value` pairs separated by whitespace or commas.
    pub fn merge_spec(&mut self, spec: &str) -> Result<()> {
        for pair in spec.split(|c: char| c.is_whitespace() || c == ',').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| Error::Config {
                key: pair.to_string(),
                value: String::new(),
                reason: "expected key=value in EMBER_CONF".into(),
            })?;
            self.set(k.trim(), v.trim());
        }
        Ok(())
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.values.insert(key.into(), value.into());
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    fn raw_or_default(&self, key: &str) -> Option<String> {
        if let Some(v) = self.values.get(key) {
            return Some(v.clone());
        }
        KNOWN_KEYS.iter().find(|e| e.key == key && !e.default.starts_with('(')).map(|e| e.default.to_string())
    }

    fn parse<T>(&self, key: &str, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<Option<T>> {
        match self.raw_or_default(key) {
            None => Ok(None),
            Some(v) => parse(v.trim()).map(Some).ok_or_else(|| Error::Config {
                key: key.to_string(),
                value: v.clone(),
                reason: format!("expected {what}"),
            }),
        }
    }

    pub fn get_string(&self, key: &str) -> Option<String> {
        self.raw_or_default(key)
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.parse(
            key,
            |s| match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Some(true),
                "false" | "0" | "no" => Some(false),
                _ => None,
            },
            "a boolean",
        )
    }

    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.parse(key, |s| s.parse().ok(), "a non-negative integer")
    }

    /// Byte sizes: `123`, `64k`, `1m`, `2g`, `1t` (binary units, case-insensitive, optional `b`).
    pub fn get_bytes(&self, key: &str) -> Result<Option<u64>> {
        self.parse(key, parse_bytes, "a size such as 512m or 2g")
    }

    /// Durations: `500ms`, `10s`, `2min`, `1h`; a bare number is seconds (as in Spark).
    pub fn get_duration(&self, key: &str) -> Result<Option<Duration>> {
        self.parse(key, parse_duration, "a duration such as 500ms or 120s")
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

pub fn parse_bytes(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.to_ascii_lowercase();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    Some(match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n),
        "min" | "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_spark_style_units() {
        assert_eq!(parse_duration("200us"), Some(Duration::from_micros(200)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("3ms"), Some(Duration::from_millis(3)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(2 * 86400)));
        assert_eq!(parse_duration("5 parsecs"), None);
    }

    #[test]
    fn defaults_apply_and_explicit_values_win() {
        let mut c = Conf::new();
        assert_eq!(c.get_u64("ember.task.maxFailures").unwrap(), Some(4));
        c.set("ember.task.maxFailures", "2");
        assert_eq!(c.get_u64("ember.task.maxFailures").unwrap(), Some(2));
        assert_eq!(c.get_u64("ember.default.parallelism").unwrap(), None);
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("64k"), Some(65536));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("12"), Some(12));
        assert_eq!(parse_bytes("2mb"), Some(2 << 20));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(parse_duration("120s"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("7 parsecs"), None);
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = Conf::new();
        c.set("ember.shuffle.compress", "maybe");
        let err = c.get_bool("ember.shuffle.compress").unwrap_err().to_string();
        assert!(err.contains("ember.shuffle.compress"), "{err}");
    }

    #[test]
    fn spec_strings_merge() {
        let mut c = Conf::new();
        c.merge_spec("ember.a=1, ember.b=two  ember.c=3").unwrap();
        assert_eq!(c.get("ember.b"), Some("two"));
        assert_eq!(c.get("ember.c"), Some("3"));
        assert!(c.merge_spec("novalue").is_err());
    }
}
