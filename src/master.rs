//! Master URLs, as Spark users write them: `local`, `local[N]`, `local[*]`,
//! `local[N,F]` (F = max task failures), and the forms later issues add.

use ember_common::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterUrl {
    /// One in-process executor with `threads` task threads.
    Local { threads: usize, max_failures: Option<u32> },
    /// `local-cluster[E,C,M]`: E executor processes with C cores and M MiB each.
    LocalCluster { executors: usize, cores: usize, memory_mib: usize },
}

fn parse_count(s: &str, url: &str) -> Result<usize> {
    let s = s.trim();
    if s == "*" {
        return Ok(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    }
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::MasterUrl { url: url.into(), reason: format!("{s:?} is not a positive number or *") }),
    }
}

impl MasterUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::MasterUrl { url: url.into(), reason: reason.into() };
        if url == "local" {
            return Ok(MasterUrl::Local { threads: 1, max_failures: None });
        }
        if let Some(inner) = url.strip_prefix("local[").and_then(|r| r.strip_suffix(']')) {
            let parts: Vec<&str> = inner.split(',').collect();
            return match parts.as_slice() {
                [n] => Ok(MasterUrl::Local { threads: parse_count(n, url)?, max_failures: None }),
                [n, f] => Ok(MasterUrl::Local {
                    threads: parse_count(n, url)?,
                    max_failures: Some(
                        f.trim().parse().ok().filter(|f| *f > 0).ok_or_else(|| bad("F must be a positive number"))?,
                    ),
                }),
                _ => Err(bad("expected local[N] or local[N,F]")),
            };
        }
        if let Some(inner) = url.strip_prefix("local-cluster[").and_then(|r| r.strip_suffix(']')) {
            let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
            if let [e, c, m] = parts.as_slice() {
                let num = |s: &str| s.parse::<usize>().ok().filter(|n| *n > 0);
                if let (Some(e), Some(c), Some(m)) = (num(e), num(c), num(m)) {
                    return Ok(MasterUrl::LocalCluster { executors: e, cores: c, memory_mib: m });
                }
            }
            return Err(bad("expected local-cluster[EXECUTORS,CORES,MEMORY_MIB]"));
        }
        Err(bad("supported masters: local, local[N], local[*], local[N,F], local-cluster[E,C,M]"))
    }

    /// Task slots in total: the default parallelism.
    pub fn total_cores(&self) -> usize {
        match self {
            MasterUrl::Local { threads, .. } => *threads,
            MasterUrl::LocalCluster { executors, cores, .. } => executors * cores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spark_forms() {
        assert_eq!(MasterUrl::parse("local").unwrap(), MasterUrl::Local { threads: 1, max_failures: None });
        assert_eq!(MasterUrl::parse("local[3]").unwrap(), MasterUrl::Local { threads: 3, max_failures: None });
        assert_eq!(MasterUrl::parse("local[2,5]").unwrap(), MasterUrl::Local { threads: 2, max_failures: Some(5) });
        assert!(matches!(MasterUrl::parse("local[*]").unwrap(), MasterUrl::Local { threads, .. } if threads >= 1));
        assert_eq!(
            MasterUrl::parse("local-cluster[2,1,1024]").unwrap(),
            MasterUrl::LocalCluster { executors: 2, cores: 1, memory_mib: 1024 }
        );
        for bad in ["local[0]", "local[x]", "yarn", "local[1,0]", "local-cluster[2,1]"] {
            assert!(MasterUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
