//! The launch contract between a driver and the executor processes it
//! starts: `EMBER_EXECUTOR_MODE=1` marks the process, the settings travel in
//! `EMBER_*` environment variables (never the secret, which goes on stdin).

use std::path::PathBuf;
use std::time::Duration;

/// Environment variable that marks a process as an executor.
pub const EXECUTOR_MODE_ENV: &str = "EMBER_EXECUTOR_MODE";

/// Settings a driver passes to an executor process (as `EMBER_*` variables).
#[derive(Clone, Debug)]
pub struct ProcessConfig {
    pub executor_id: String,
    pub driver_address: String,
    pub cores: usize,
    pub dir: PathBuf,
    pub memory_budget: usize,
    pub compress: bool,
    pub block_size: usize,
    pub max_direct_result: usize,
    pub heartbeat: Duration,
    /// Without any message from the driver for this long, the executor exits.
    pub network_timeout: Duration,
    pub max_frame: usize,
    /// `ember.spinWait`.
    pub spin_wait: Duration,
}

impl ProcessConfig {
    /// The variables that carry this configuration to a child process.
    pub fn to_env(&self) -> Vec<(String, String)> {
        vec![
            (EXECUTOR_MODE_ENV.into(), "1".into()),
            ("EMBER_EXECUTOR_ID".into(), self.executor_id.clone()),
            ("EMBER_DRIVER_ADDRESS".into(), self.driver_address.clone()),
            ("EMBER_EXECUTOR_CORES".into(), self.cores.to_string()),
            ("EMBER_EXECUTOR_DIR".into(), self.dir.to_string_lossy().into_owned()),
            ("EMBER_EXECUTOR_MEMORY".into(), self.memory_budget.to_string()),
            ("EMBER_SHUFFLE_COMPRESS".into(), self.compress.to_string()),
            ("EMBER_SHUFFLE_BLOCK_SIZE".into(), self.block_size.to_string()),
            ("EMBER_MAX_DIRECT_RESULT".into(), self.max_direct_result.to_string()),
            ("EMBER_HEARTBEAT_MS".into(), self.heartbeat.as_millis().to_string()),
            ("EMBER_NETWORK_TIMEOUT_MS".into(), self.network_timeout.as_millis().to_string()),
            ("EMBER_MAX_FRAME".into(), self.max_frame.to_string()),
            ("EMBER_SPIN_WAIT_US".into(), self.spin_wait.as_micros().to_string()),
        ]
    }

    /// Reads the settings a driver passed in the environment.
    pub fn from_env() -> Result<Self, String> {
        fn var(k: &str) -> Result<String, String> {
            std::env::var(k).map_err(|_| format!("{k} is not set"))
        }
        fn num<T: std::str::FromStr>(k: &str) -> Result<T, String> {
            var(k)?.parse().map_err(|_| format!("{k} is not a number"))
        }
        Ok(ProcessConfig {
            executor_id: var("EMBER_EXECUTOR_ID")?,
            driver_address: var("EMBER_DRIVER_ADDRESS")?,
            cores: num("EMBER_EXECUTOR_CORES")?,
            dir: PathBuf::from(var("EMBER_EXECUTOR_DIR")?),
            memory_budget: num("EMBER_EXECUTOR_MEMORY")?,
            compress: var("EMBER_SHUFFLE_COMPRESS")? == "true",
            block_size: num("EMBER_SHUFFLE_BLOCK_SIZE")?,
            max_direct_result: num("EMBER_MAX_DIRECT_RESULT")?,
            heartbeat: Duration::from_millis(num("EMBER_HEARTBEAT_MS")?),
            network_timeout: Duration::from_millis(num("EMBER_NETWORK_TIMEOUT_MS")?),
            max_frame: num("EMBER_MAX_FRAME")?,
            spin_wait: Duration::from_micros(num("EMBER_SPIN_WAIT_US")?),
        })
    }
}
