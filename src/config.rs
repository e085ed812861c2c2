//! The module's configuration: the algorithm used when a command names none
//! (`default-algorithm`), and the size of `RATELIMIT.TOP`'s summary (`top-keys`).
//!
//! Both are set at load by the module arguments (`loadmodule .../libredis_ratelimit.so
//! default-algorithm gcra top-keys 1000`), parsed by the pure [`parse_module_args`]. Where the
//! server has module configurations (Redis 7.0+, Valkey), they are also the configs
//! `ratelimit.default-algorithm` and `ratelimit.top-keys`, read and changed with `CONFIG GET` and
//! `CONFIG SET`; a directive in the server's configuration overrides the module argument.
//! Elsewhere (Redis 6.2), only the module arguments set them.
//!
//! The values live in atomics, so the hot path reads them with one relaxed load, no lock.

use crate::error::Echo;
use ratelimit_core::Algorithm;
use redis_module::{raw, Context};
use std::ffi::CStr;
use std::fmt;
use std::ops::Deref;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

/// The argument's name, as a module argument; the config is `ratelimit.` followed by it.
pub const DEFAULT_ALGORITHM: &str = "default-algorithm";

/// The other argument's name: `RATELIMIT.TOP`'s capacity, 0 to turn it off.
pub const TOP_KEYS: &str = "top-keys";

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
    /// How many denied keys `RATELIMIT.TOP` tracks; 0 turns it off.
    pub top_keys: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            default_algorithm: Algorithm::Fixed,
            top_keys: crate::top::DEFAULT_CAPACITY,
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
    /// `top-keys` is not an integer from 0 to 100,000.
    InvalidTopKeys(Echo),
    /// An argument given twice; holds its name.
    Repeated(&'static str),
}

impl fmt::Display for ArgumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expected = "fixed, sliding or gcra";
        let max = crate::top::MAX_CAPACITY;
        match self {
            ArgumentError::Unknown(name) => write!(
                f,
                "unknown module argument '{name}': the arguments are \
                 '{DEFAULT_ALGORITHM} <{}>' and '{TOP_KEYS} <0 to {max}>'",
                ALGORITHM_NAMES.join("|")
            ),
            ArgumentError::MissingValue(name) if *name == TOP_KEYS => write!(
                f,
                "module argument '{name}' needs a value: an integer from 0 to {max}"
            ),
            ArgumentError::MissingValue(name) => {
                write!(f, "module argument '{name}' needs a value: {expected}")
            }
            ArgumentError::InvalidTopKeys(value) => write!(
                f,
                "invalid value '{value}' for module argument '{TOP_KEYS}': \
                 expected an integer from 0 to {max}"
            ),
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
    let (mut seen_algorithm, mut seen_top) = (false, false);
    let mut rest = args.iter();
    while let Some(name) = rest.next() {
        let (argument, seen) = if name.eq_ignore_ascii_case(DEFAULT_ALGORITHM.as_bytes()) {
            (DEFAULT_ALGORITHM, &mut seen_algorithm)
        } else if name.eq_ignore_ascii_case(TOP_KEYS.as_bytes()) {
            (TOP_KEYS, &mut seen_top)
        } else {
            return Err(ArgumentError::Unknown(Echo::new(name)));
        };
        if std::mem::replace(seen, true) {
            return Err(ArgumentError::Repeated(argument));
        }
        let value: &[u8] = rest.next().ok_or(ArgumentError::MissingValue(argument))?;
        if argument == TOP_KEYS {
            // Canonical digits, as `CONFIG SET ratelimit.top-keys` takes them: no `05`.
            settings.top_keys = ratelimit_core::parse::canonical_u64(value)
                .filter(|&n| n <= crate::top::MAX_CAPACITY as u64)
                .ok_or_else(|| ArgumentError::InvalidTopKeys(Echo::new(value)))?
                as usize;
        } else {
            settings.default_algorithm = Algorithm::parse(value)
                .ok_or_else(|| ArgumentError::InvalidAlgorithm(Echo::new(value)))?;
        }
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
/// `top-keys`, read by every denial.
static TOP_KEYS_VALUE: AtomicUsize = AtomicUsize::new(crate::top::DEFAULT_CAPACITY);

/// The capacity of `RATELIMIT.TOP`'s summary; 0 when it is off.
#[inline]
pub(crate) fn top_keys() -> usize {
    TOP_KEYS_VALUE.load(Relaxed)
}

fn set_top_keys(capacity: usize) {
    TOP_KEYS_VALUE.store(capacity, Relaxed);
    crate::top::resize(capacity);
}

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
    set_top_keys(settings.top_keys);
    // SAFETY: copies function pointers filled in by RedisModule_Init, to test them.
    let (register, register_numeric) = unsafe {
        (
            raw::RedisModule_RegisterEnumConfig,
            raw::RedisModule_RegisterNumericConfig,
        )
    };
    let (Some(register), Some(register_numeric)) = (register, register_numeric) else {
        return Ok(format!(
            "default algorithm {}, top-keys {}; no CONFIG ratelimit.* \
             (RedisModule_RegisterEnumConfig not found), only the module arguments set them",
            value_name(default_algorithm()),
            top_keys()
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
    // SAFETY: as above, with the numeric config's signatures.
    let registered = unsafe {
        register_numeric(
            ctx.ctx,
            c"top-keys".as_ptr(),
            settings.top_keys as std::os::raw::c_longlong,
            raw::REDISMODULE_CONFIG_DEFAULT,
            0,
            crate::top::MAX_CAPACITY as std::os::raw::c_longlong,
            Some(get_top_keys),
            Some(set_top_keys_config),
            None,
            std::ptr::null_mut(),
        )
    };
    if registered != raw::REDISMODULE_OK as c_int {
        return Err(format!(
            "could not register the config ratelimit.{TOP_KEYS}"
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
            "invalid ratelimit.{DEFAULT_ALGORITHM} or ratelimit.{TOP_KEYS} in the server's \
             configuration: expected fixed, sliding or gcra, and an integer from 0 to {}",
            crate::top::MAX_CAPACITY
        ));
    }
    Ok(format!(
        "default algorithm {}, top-keys {}; CONFIG GET/SET ratelimit.{DEFAULT_ALGORITHM} and \
         ratelimit.{TOP_KEYS} available",
        value_name(default_algorithm()),
        top_keys()
    ))
}

/// The numeric config's getter: `top-keys`.
unsafe extern "C" fn get_top_keys(
    _name: *const c_char,
    _privdata: *mut c_void,
) -> std::os::raw::c_longlong {
    top_keys() as std::os::raw::c_longlong
}

/// The numeric config's setter; the server checks the bounds (0 to `MAX_CAPACITY`).
unsafe extern "C" fn set_top_keys_config(
    _name: *const c_char,
    value: std::os::raw::c_longlong,
    _privdata: *mut c_void,
    _err: *mut *mut raw::RedisModuleString,
) -> c_int {
    set_top_keys(usize::try_from(value).unwrap_or(0));
    raw::REDISMODULE_OK as c_int
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
    fn top_keys_sets_the_summary_size() {
        assert_eq!(parse("top-keys 0").unwrap().top_keys, 0);
        assert_eq!(parse("TOP-KEYS 100000").unwrap().top_keys, 100_000);
        let both = parse("top-keys 7 default-algorithm gcra").unwrap();
        assert_eq!(
            (both.top_keys, both.default_algorithm),
            (7, Algorithm::Gcra)
        );
        assert_eq!(parse("").unwrap().top_keys, crate::top::DEFAULT_CAPACITY);
        // What `CONFIG SET` refuses, the load arguments refuse too.
        for bad in ["05", "00", "+5", "-1", "100001", "1e3", " 5"] {
            let line = format!("top-keys {bad}");
            let args: Vec<&[u8]> = vec![b"top-keys", bad.as_bytes()];
            assert!(
                matches!(
                    parse_module_args(&args),
                    Err(ArgumentError::InvalidTopKeys(_))
                ),
                "{line}"
            );
        }
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
                "unknown module argument 'default-algo': the arguments are \
                 'default-algorithm <fixed|sliding|gcra>' and 'top-keys <0 to 100000>'",
            ),
            (
                "gcra",
                "unknown module argument 'gcra': the arguments are \
                 'default-algorithm <fixed|sliding|gcra>' and 'top-keys <0 to 100000>'",
            ),
            (
                "top-keys",
                "module argument 'top-keys' needs a value: an integer from 0 to 100000",
            ),
            (
                "top-keys 100001",
                "invalid value '100001' for module argument 'top-keys': expected an integer \
                 from 0 to 100000",
            ),
            (
                "top-keys 10 TOP-KEYS 20",
                "module argument 'top-keys' given more than once",
            ),
            (
                "default-algorithm gcra default-algorithm fixed",
                "module argument 'default-algorithm' given more than once",
            ),
            (
                "default-algorithm gcra extra",
                "unknown module argument 'extra': the arguments are \
                 'default-algorithm <fixed|sliding|gcra>' and 'top-keys <0 to 100000>'",
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
