//! The module's configuration: the algorithm used when a command names none.
//!
//! It is set at load by the module arguments (`loadmodule .../libredis_ratelimit.so
//! default-algorithm gcra`), parsed by the pure [`parse_module_args`]. Where the server has module
//! configurations (Redis 7.0+, Valkey), it is also the config `ratelimit.default-algorithm`, read
//! and changed with `CONFIG GET` and `CONFIG SET`; a `ratelimit.default-algorithm` directive in the
//! server's configuration overrides the module argument. Elsewhere (Redis 6.2), only the module
//! argument sets it.
//!
//! The value lives in an `AtomicU8`, so the hot path reads it with one relaxed load, no lock.

use crate::error::Echo;
use ratelimit_core::Algorithm;
use redis_module::{raw, Context};
use std::ffi::CStr;
use std::fmt;
use std::ops::Deref;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// The argument's name, as a module argument; the config is `ratelimit.` followed by it.
pub const DEFAULT_ALGORITHM: &str = "default-algorithm";

/// The values of `default-algorithm`, in the order of their codes (see [`code`]). The config
/// accepts them in any letter case and `CONFIG GET` answers them in lower case.
const ALGORITHM_NAMES: [&str; 3] = ["fixed", "sliding", "gcra"];

/// [`ALGORITHM_NAMES`] for the server's enum config.
const CONFIG_VALUES: [&CStr; 3] = [c"fixed", c"sliding", c"gcra"];

/// The settings the module arguments give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The algorithm of a `RATELIMIT.CHECK` or `RATELIMIT.QUOTA` without `ALGORITHM`.
    pub default_algorithm: Algorithm,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            default_algorithm: Algorithm::Fixed,
        }
    }
}

/// Why the module arguments were refused; the module then fails to load.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArgumentError {
    /// An argument name that the module does not know.
    Unknown(Echo),
    /// A known argument came last, without its value; holds its name.
    MissingValue(&'static str),
    /// `default-algorithm` names none of the algorithms.
    InvalidAlgorithm(Echo),
    /// An argument given twice; holds its name.
    Repeated(&'static str),
}

impl fmt::Display for ArgumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expected = "fixed, sliding or gcra";
        match self {
            ArgumentError::Unknown(name) => write!(
                f,
                "unknown module argument '{name}': the only argument is \
                 '{DEFAULT_ALGORITHM} <{}>'",
                ALGORITHM_NAMES.join("|")
            ),
            ArgumentError::MissingValue(name) => {
                write!(f, "module argument '{name}' needs a value: {expected}")
            }
            ArgumentError::InvalidAlgorithm(value) => write!(
                f,
                "invalid value '{value}' for module argument '{DEFAULT_ALGORITHM}': \
                 expected {expected}"
            ),
            ArgumentError::Repeated(name) => {
                write!(f, "module argument '{name}' given more than once")
            }
        }
    }
}

impl std::error::Error for ArgumentError {}

/// Parses the module arguments: pairs of a name and a value, names in any letter case. The only
/// name is `default-algorithm`, whose value is `fixed`, `sliding` or `gcra` in any letter case.
/// No arguments give the defaults. Fails on the first unknown name, missing or invalid value, or
/// repeated name.
pub fn parse_module_args<A: Deref<Target = [u8]>>(args: &[A]) -> Result<Settings, ArgumentError> {
    let mut settings = Settings::default();
    let mut seen = false;
    let mut rest = args.iter();
    while let Some(name) = rest.next() {
        if !name.eq_ignore_ascii_case(DEFAULT_ALGORITHM.as_bytes()) {
            return Err(ArgumentError::Unknown(Echo::new(name)));
        }
        if seen {
            return Err(ArgumentError::Repeated(DEFAULT_ALGORITHM));
        }
        seen = true;
        let value: &[u8] = rest
            .next()
            .ok_or(ArgumentError::MissingValue(DEFAULT_ALGORITHM))?;
        settings.default_algorithm = Algorithm::parse(value)
            .ok_or_else(|| ArgumentError::InvalidAlgorithm(Echo::new(value)))?;
    }
    Ok(settings)
}

/// The algorithm's code in [`DEFAULT`] and in the enum config: its index in [`ALGORITHM_NAMES`].
fn code(algorithm: Algorithm) -> u8 {
    match algorithm {
        Algorithm::Fixed => 0,
        Algorithm::Sliding => 1,
        Algorithm::Gcra => 2,
    }
}

/// The algorithm's name as the config and INFO spell it: `fixed`, `sliding` or `gcra`.
pub fn value_name(algorithm: Algorithm) -> &'static str {
    ALGORITHM_NAMES[usize::from(code(algorithm))]
}

fn from_code(code: i64) -> Option<Algorithm> {
    match code {
        0 => Some(Algorithm::Fixed),
        1 => Some(Algorithm::Sliding),
        2 => Some(Algorithm::Gcra),
        _ => None,
    }
}

/// The current default algorithm's [`code`]. Written at load and by `CONFIG SET`, read by every
/// command; all of them hold the server's lock, so relaxed ordering is enough.
static DEFAULT: AtomicU8 = AtomicU8::new(0);

/// The algorithm of a command that names none.
#[inline]
pub(crate) fn default_algorithm() -> Algorithm {
    from_code(i64::from(DEFAULT.load(Relaxed))).unwrap_or(Algorithm::Fixed)
}

fn set_default_algorithm(algorithm: Algorithm) {
    DEFAULT.store(code(algorithm), Relaxed);
}

/// Applies the module arguments at load and, where the server has module configurations,
/// registers `ratelimit.default-algorithm` and loads its value from the server's configuration.
/// Answers a line for the log saying what was configured; fails with the reason the module must
/// not load.
pub(crate) fn load<A: Deref<Target = [u8]>>(ctx: &Context, args: &[A]) -> Result<String, String> {
    let settings = parse_module_args(args).map_err(|e| e.to_string())?;
    set_default_algorithm(settings.default_algorithm);
    // SAFETY: copies a function pointer filled in by RedisModule_Init, to test it.
    let register = unsafe { raw::RedisModule_RegisterEnumConfig };
    let Some(register) = register else {
        return Ok(format!(
            "default algorithm {}; no CONFIG ratelimit.{DEFAULT_ALGORITHM} \
             (RedisModule_RegisterEnumConfig not found), only the module argument sets it",
            value_name(default_algorithm())
        ));
    };
    let name = c"default-algorithm";
    let mut names = CONFIG_VALUES.map(CStr::as_ptr);
    let codes: [c_int; 3] = [0, 1, 2];
    // SAFETY: called from OnLoad with its context; the server copies the name and the value
    // names; the callbacks match the enum config signatures and use no private data.
    let registered = unsafe {
        register(
            ctx.ctx,
            name.as_ptr(),
            c_int::from(code(settings.default_algorithm)),
            raw::REDISMODULE_CONFIG_DEFAULT,
            names.as_mut_ptr(),
            codes.as_ptr(),
            names.len() as c_int,
            Some(get_config),
            Some(set_config),
            None,
            std::ptr::null_mut(),
        )
    };
    if registered != raw::REDISMODULE_OK as c_int {
        return Err(format!(
            "could not register the config ratelimit.{DEFAULT_ALGORITHM}"
        ));
    }
    // SAFETY: RedisModule_LoadConfigs exists wherever RegisterEnumConfig does (both 7.0).
    let loaded = unsafe {
        match raw::RedisModule_LoadConfigs {
            Some(load_configs) => load_configs(ctx.ctx),
            None => raw::REDISMODULE_ERR as c_int,
        }
    };
    if loaded != raw::REDISMODULE_OK as c_int {
        return Err(format!(
            "invalid ratelimit.{DEFAULT_ALGORITHM} in the server's configuration: \
             expected fixed, sliding or gcra"
        ));
    }
    Ok(format!(
        "default algorithm {}; CONFIG GET/SET ratelimit.{DEFAULT_ALGORITHM} available",
        value_name(default_algorithm())
    ))
}

/// The enum config's getter: the current default algorithm's code.
unsafe extern "C" fn get_config(_name: *const c_char, _privdata: *mut c_void) -> c_int {
    c_int::from(DEFAULT.load(Relaxed))
}

/// The enum config's setter. The server only passes codes of the registered values; any other is
/// refused with an error message.
unsafe extern "C" fn set_config(
    _name: *const c_char,
    value: c_int,
    _privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    match from_code(i64::from(value)) {
        Some(algorithm) => {
            set_default_algorithm(algorithm);
            raw::REDISMODULE_OK as c_int
        }
        None => {
            let message = "expected fixed, sliding or gcra";
            if !err.is_null() {
                if let Some(create) = raw::RedisModule_CreateString {
                    *err = create(
                        std::ptr::null_mut(),
                        message.as_ptr().cast::<c_char>(),
                        message.len(),
                    );
                }
            }
            raw::REDISMODULE_ERR as c_int
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Settings, String> {
        let words: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
        parse_module_args(&words).map_err(|e| e.to_string())
    }

    fn algorithm(line: &str) -> Algorithm {
        parse(line).unwrap().default_algorithm
    }

    #[test]
    fn no_arguments_give_fixed() {
        assert_eq!(parse(""), Ok(Settings::default()));
        assert_eq!(algorithm(""), Algorithm::Fixed);
    }

    #[test]
    fn default_algorithm_in_any_letter_case() {
        assert_eq!(algorithm("default-algorithm gcra"), Algorithm::Gcra);
        assert_eq!(algorithm("default-algorithm GCRA"), Algorithm::Gcra);
        assert_eq!(algorithm("DEFAULT-ALGORITHM Sliding"), Algorithm::Sliding);
        assert_eq!(algorithm("Default-Algorithm fixed"), Algorithm::Fixed);
    }

    #[test]
    fn bad_arguments_are_named() {
        let cases = [
            (
                "default-algorithm token-bucket",
                "invalid value 'token-bucket' for module argument 'default-algorithm': \
                 expected fixed, sliding or gcra",
            ),
            (
                "default-algorithm",
                "module argument 'default-algorithm' needs a value: fixed, sliding or gcra",
            ),
            (
                "default-algo gcra",
                "unknown module argument 'default-algo': the only argument is \
                 'default-algorithm <fixed|sliding|gcra>'",
            ),
            (
                "gcra",
                "unknown module argument 'gcra': the only argument is \
                 'default-algorithm <fixed|sliding|gcra>'",
            ),
            (
                "default-algorithm gcra default-algorithm fixed",
                "module argument 'default-algorithm' given more than once",
            ),
            (
                "default-algorithm gcra extra",
                "unknown module argument 'extra': the only argument is \
                 'default-algorithm <fixed|sliding|gcra>'",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(line), Err(expected.to_string()), "{line}");
        }
        let binary: [&[u8]; 2] = [b"default-algorithm", b"gc\r\nra"];
        assert_eq!(
            parse_module_args(&binary).unwrap_err(),
            ArgumentError::InvalidAlgorithm(Echo::new(b"gc\r\nra"))
        );
    }

    #[test]
    fn codes_match_the_config_values() {
        for (i, name) in ALGORITHM_NAMES.iter().enumerate() {
            let algorithm = Algorithm::parse(name.as_bytes()).unwrap();
            assert_eq!(usize::from(code(algorithm)), i);
            assert_eq!(from_code(i as i64), Some(algorithm));
            assert_eq!(value_name(algorithm), *name);
            assert_eq!(CONFIG_VALUES[i].to_str(), Ok(*name));
        }
        assert_eq!(from_code(3), None);
        assert_eq!(from_code(-1), None);
    }

    #[test]
    fn the_default_is_read_back() {
        for algorithm in [Algorithm::Gcra, Algorithm::Sliding, Algorithm::Fixed] {
            set_default_algorithm(algorithm);
            assert_eq!(default_algorithm(), algorithm);
        }
    }
}
