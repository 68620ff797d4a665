//! Where the cubecl backends keep compiled kernels and autotune results, and how hard
//! they tune: one directory and one level for every run of the process.
//!
//! cubecl (0.10) leaves the compiled-kernel cache off, keeps autotune results under
//! `target/autotune` of whatever Cargo project lies above the working directory, and
//! reads its configuration once, when the first device is created. [`KernelCacheConfig`]
//! turns the compiled-kernel cache on and puts both caches in one directory:
//!
//! 1. the directory given explicitly (the CLI's `--kernel-cache`),
//! 2. else `$MAGICNAMING_CACHE_DIR`,
//! 3. else `$XDG_CACHE_HOME/magicnaming` (an absolute `XDG_CACHE_HOME` only),
//! 4. else `$HOME/.cache/magicnaming`.
//!
//! Under it: `autotune/<device>/...` (autotune results), `cuda/ptx...` (PTX of the CUDA
//! backend), `vulkan/spirv...` (SPIR-V of the wgpu backend on Vulkan). The autotune level is
//! [`AutotuneLevel::Balanced`] unless `$MAGICNAMING_AUTOTUNE_LEVEL` says otherwise; the
//! level is part of cubecl's tuning keys, so results tuned at one level are not reused at
//! another.
//!
//! [`KernelCacheConfig::apply`] must run before the first cubecl device is created;
//! applying the same configuration again does nothing, a different one is an error naming
//! both. Without the `cuda`/`wgpu` features there is nothing to configure and it only
//! records the choice.
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

/// The environment variable naming the cache directory.
pub const CACHE_DIR_ENV: &str = "MAGICNAMING_CACHE_DIR";
/// The environment variable naming the autotune level.
pub const AUTOTUNE_LEVEL_ENV: &str = "MAGICNAMING_AUTOTUNE_LEVEL";

/// Errors of resolving or applying a [`KernelCacheConfig`].
#[derive(Debug, thiserror::Error)]
pub enum KernelCacheError {
    /// No directory was given and neither `XDG_CACHE_HOME` nor `HOME` is usable.
    #[error(
        "no kernel cache directory: set {CACHE_DIR_ENV} (or pass one explicitly); \
         neither XDG_CACHE_HOME nor HOME is set to an absolute path"
    )]
    NoDirectory,
    /// An autotune level that is not one of cubecl's.
    #[error("{AUTOTUNE_LEVEL_ENV}={0}: expected minimal, balanced, extensive or full")]
    Level(String),
    /// The cache directory cannot be created.
    #[error("kernel cache {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration is already in force (applied earlier, or read by a device created
    /// before), and it is not this one.
    #[error("kernel cache already configured as {current}; cannot switch to {requested}")]
    AlreadySet {
        /// What is in force.
        current: String,
        /// What was asked for.
        requested: String,
    },
}

/// How hard cubecl's autotune searches (cubecl's `AutotuneLevel`, without the feature
/// gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutotuneLevel {
    /// The fewest candidates.
    Minimal,
    /// cubecl's default.
    #[default]
    Balanced,
    /// More candidates.
    Extensive,
    /// Every candidate.
    Full,
}

impl AutotuneLevel {
    /// The lowercase name, as cubecl's configuration files spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Balanced => "balanced",
            Self::Extensive => "extensive",
            Self::Full => "full",
        }
    }
}

impl FromStr for AutotuneLevel {
    type Err = KernelCacheError;

    /// `minimal`, `balanced`, `extensive`, `full`, or cubecl's numbers `0`-`3`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "minimal" | "0" => Ok(Self::Minimal),
            "balanced" | "1" => Ok(Self::Balanced),
            "extensive" | "2" => Ok(Self::Extensive),
            "full" | "3" => Ok(Self::Full),
            _ => Err(KernelCacheError::Level(s.to_string())),
        }
    }
}

/// The environment variables the resolution reads, passed in so that it is a pure
/// function (tests give their own; [`CacheEnv::from_process`] reads the real ones).
#[derive(Debug, Clone, Default)]
pub struct CacheEnv {
    /// `MAGICNAMING_CACHE_DIR`.
    pub cache_dir: Option<String>,
    /// `MAGICNAMING_AUTOTUNE_LEVEL`.
    pub autotune_level: Option<String>,
    /// `XDG_CACHE_HOME`.
    pub xdg_cache_home: Option<String>,
    /// `HOME`.
    pub home: Option<String>,
}

impl CacheEnv {
    /// The process's environment (non-Unicode values count as unset).
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok();
        Self {
            cache_dir: var(CACHE_DIR_ENV),
            autotune_level: var(AUTOTUNE_LEVEL_ENV),
            xdg_cache_home: var("XDG_CACHE_HOME"),
            home: var("HOME"),
        }
    }
}

/// One cache directory for compiled kernels and autotune results, and one autotune level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCacheConfig {
    /// The cache directory.
    pub dir: PathBuf,
    /// The autotune level.
    pub autotune_level: AutotuneLevel,
}

impl fmt::Display for KernelCacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (autotune {})",
            self.dir.display(),
            self.autotune_level.name()
        )
    }
}

/// What is in force in this process, once applied.
static APPLIED: Mutex<Option<KernelCacheConfig>> = Mutex::new(None);

impl KernelCacheConfig {
    /// The configuration from `explicit` (a directory given by the caller) and `env`, in
    /// the order of the module documentation. Empty values count as unset.
    ///
    /// # Errors
    /// [`KernelCacheError::NoDirectory`] when nothing names a directory;
    /// [`KernelCacheError::Level`] for an unknown autotune level.
    pub fn resolve(explicit: Option<&Path>, env: &CacheEnv) -> Result<Self, KernelCacheError> {
        let set = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(PathBuf::from);
        let dir = explicit
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .or_else(|| set(&env.cache_dir))
            .or_else(|| {
                set(&env.xdg_cache_home)
                    .filter(|p| p.is_absolute())
                    .map(|p| p.join("magicnaming"))
            })
            .or_else(|| {
                set(&env.home)
                    .filter(|p| p.is_absolute())
                    .map(|p| p.join(".cache").join("magicnaming"))
            })
            .ok_or(KernelCacheError::NoDirectory)?;
        let autotune_level = match env.autotune_level.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => s.parse()?,
            None => AutotuneLevel::default(),
        };
        Ok(Self {
            dir,
            autotune_level,
        })
    }

    /// [`Self::resolve`] with the process's environment.
    ///
    /// # Errors
    /// As [`Self::resolve`].
    pub fn from_env(explicit: Option<&Path>) -> Result<Self, KernelCacheError> {
        Self::resolve(explicit, &CacheEnv::from_process())
    }

    /// The configuration in force in this process, if one was applied.
    pub fn applied() -> Option<Self> {
        APPLIED.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes this the configuration of the cubecl backends compiled in: creates the
    /// directory, turns the compiled-kernel cache on there, puts the autotune cache there,
    /// sets the autotune level. Other settings come from cubecl's own sources
    /// (`cubecl.toml`, `CUBECL_DEBUG_LOG`, ...). Call it before the first cubecl device
    /// is created; without the `cuda`/`wgpu` features it only records the choice.
    ///
    /// # Errors
    /// [`KernelCacheError::Io`] when the directory cannot be created;
    /// [`KernelCacheError::AlreadySet`] when another configuration was applied, or when a
    /// cubecl device already read its configuration (then its cache locations stay).
    ///
    /// # Panics
    /// With a cubecl backend compiled in, on a malformed `cubecl.toml` above the working
    /// directory (cubecl's reader panics; its first device would panic the same way).
    pub fn apply(&self) -> Result<(), KernelCacheError> {
        let mut applied = APPLIED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = applied.as_ref() {
            if current == self {
                return Ok(());
            }
            return Err(KernelCacheError::AlreadySet {
                current: current.to_string(),
                requested: self.to_string(),
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| KernelCacheError::Io {
            path: self.dir.clone(),
            source,
        })?;
        #[cfg(feature = "kernels")]
        cubecl_config::set(self)?;
        #[cfg(not(feature = "kernels"))]
        log::debug!("kernel cache {self}: no cubecl backend compiled in, nothing to configure");
        *applied = Some(self.clone());
        Ok(())
    }
}

#[cfg(feature = "kernels")]
mod cubecl_config {
    use cubecl::config::autotune::AutotuneLevel as CubeLevel;
    use cubecl::config::cache::CacheConfig;
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};

    use super::{AutotuneLevel, KernelCacheConfig, KernelCacheError};

    /// Installs `config` as cubecl's global configuration, on top of what cubecl would
    /// read itself (files and `CUBECL_*` variables).
    pub(super) fn set(config: &KernelCacheConfig) -> Result<(), KernelCacheError> {
        if let Ok(v) = std::env::var("CUBECL_AUTOTUNE_LEVEL") {
            log::warn!(
                "CUBECL_AUTOTUNE_LEVEL={v} is overridden: the autotune level is {} \
                 (set {} instead)",
                config.autotune_level.name(),
                super::AUTOTUNE_LEVEL_ENV
            );
        }
        let mut cube = CubeClRuntimeConfig::from_current_dir().override_from_env();
        cube.compilation.cache = Some(CacheConfig::File(config.dir.clone()));
        cube.autotune.cache = CacheConfig::File(config.dir.clone());
        cube.autotune.level = match config.autotune_level {
            AutotuneLevel::Minimal => CubeLevel::Minimal,
            AutotuneLevel::Balanced => CubeLevel::Balanced,
            AutotuneLevel::Extensive => CubeLevel::Extensive,
            AutotuneLevel::Full => CubeLevel::Full,
        };
        // The check and the store under one lock: `RuntimeConfig::set` would panic when
        // a device has read the configuration already.
        let mut state = CubeClRuntimeConfig::storage().lock();
        if let Some(current) = state.as_ref() {
            return Err(KernelCacheError::AlreadySet {
                current: format!(
                    "cubecl's own (autotune cache {}, level {:?}), read by a device created earlier",
                    current.autotune.cache.root().display(),
                    current.autotune.level
                ),
                requested: config.to_string(),
            });
        }
        *state = Some(std::sync::Arc::new(cube));
        log::info!("kernel cache: {config}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(cache: Option<&str>, xdg: Option<&str>, home: Option<&str>) -> CacheEnv {
        CacheEnv {
            cache_dir: cache.map(String::from),
            autotune_level: None,
            xdg_cache_home: xdg.map(String::from),
            home: home.map(String::from),
        }
    }

    fn dir(explicit: Option<&str>, e: &CacheEnv) -> PathBuf {
        KernelCacheConfig::resolve(explicit.map(Path::new), e)
            .unwrap()
            .dir
    }

    #[test]
    fn explicit_then_env_then_xdg_then_home() {
        let all = env(Some("/env/c"), Some("/xdg"), Some("/home/u"));
        assert_eq!(dir(Some("/flag"), &all), PathBuf::from("/flag"));
        assert_eq!(dir(None, &all), PathBuf::from("/env/c"));
        let no_env = env(None, Some("/xdg"), Some("/home/u"));
        assert_eq!(dir(None, &no_env), PathBuf::from("/xdg/magicnaming"));
        let home_only = env(None, None, Some("/home/u"));
        assert_eq!(
            dir(None, &home_only),
            PathBuf::from("/home/u/.cache/magicnaming")
        );
    }

    #[test]
    fn empty_and_relative_values_are_skipped() {
        // Empty values are unset; a relative XDG_CACHE_HOME is invalid (XDG spec).
        let e = env(Some(""), Some("rel/xdg"), Some("/home/u"));
        assert_eq!(
            dir(Some(""), &e),
            PathBuf::from("/home/u/.cache/magicnaming")
        );
        // An explicit or MAGICNAMING_CACHE_DIR path may be relative.
        assert_eq!(dir(Some("rel"), &e), PathBuf::from("rel"));
        let e = env(Some("rel/env"), None, None);
        assert_eq!(dir(None, &e), PathBuf::from("rel/env"));
    }

    #[test]
    fn nothing_to_go_on_is_an_error() {
        let e = env(None, Some("relative"), Some("also-relative"));
        let err = KernelCacheConfig::resolve(None, &e).unwrap_err();
        assert!(matches!(err, KernelCacheError::NoDirectory), "{err}");
        assert!(err.to_string().contains(CACHE_DIR_ENV), "{err}");
    }

    #[test]
    fn autotune_level_from_env_or_balanced() {
        let mut e = env(None, None, Some("/h"));
        let level = |e: &CacheEnv| KernelCacheConfig::resolve(None, e).map(|c| c.autotune_level);
        assert_eq!(level(&e).unwrap(), AutotuneLevel::Balanced);
        for (s, want) in [
            ("minimal", AutotuneLevel::Minimal),
            ("Extensive", AutotuneLevel::Extensive),
            ("3", AutotuneLevel::Full),
        ] {
            e.autotune_level = Some(s.into());
            assert_eq!(level(&e).unwrap(), want, "{s}");
        }
        e.autotune_level = Some("turbo".into());
        let err = level(&e).unwrap_err().to_string();
        assert!(
            err.contains("turbo") && err.contains(AUTOTUNE_LEVEL_ENV),
            "{err}"
        );
    }

    /// One test touches the process-wide state: applying twice is idempotent, a
    /// different configuration afterwards is an error naming both. Not with cubecl
    /// compiled in: there it would configure the devices of the kernel tests running
    /// in the same process.
    #[cfg(not(feature = "kernels"))]
    #[test]
    fn apply_is_idempotent_and_refuses_a_different_one() {
        let tmp = tempfile::tempdir().unwrap();
        let a = KernelCacheConfig {
            dir: tmp.path().join("a"),
            autotune_level: AutotuneLevel::Balanced,
        };
        a.apply().unwrap();
        assert!(a.dir.is_dir());
        a.apply().unwrap();
        assert_eq!(KernelCacheConfig::applied(), Some(a.clone()));
        let b = KernelCacheConfig {
            dir: tmp.path().join("b"),
            ..a.clone()
        };
        let err = b.apply().unwrap_err().to_string();
        assert!(err.contains("/a (") && err.contains("/b ("), "{err}");
        assert!(!b.dir.exists(), "a refused configuration creates nothing");
    }
}
