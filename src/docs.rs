//! The commands' documentation and key specs, registered with `RedisModule_SetCommandInfo`
//! where the server has it (Redis 7.0+, Valkey), so that `COMMAND DOCS`, `HELP <command>` in
//! redis-cli and its hints work as they do for core commands, and so that each key is declared
//! with what the command does to it: `RATELIMIT.QUOTA`'s is read-only, so an ACL `%R~pattern`
//! grants it. Elsewhere (6.2) the commands keep the key positions of their creation.
//!
//! The descriptions below are data: a table per command, turned into the server's C structures
//! (zero-terminated arrays) for the duration of the call; the server copies them.

use redis_module::{raw, Context};
use std::ffi::CStr;
use std::os::raw::c_int;
use std::ptr;

/// One argument, as `COMMAND DOCS` lists it.
struct Arg {
    name: &'static CStr,
    kind: Kind,
    token: Option<&'static CStr>,
    flags: u32,
    subargs: &'static [Arg],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A key, described by the command's first key spec.
    Key,
    Integer,
    String,
    /// A keyword alone (`DRYRUN`).
    Token,
    /// One of the sub-arguments.
    OneOf,
    /// The sub-arguments in sequence.
    Block,
}

const OPTIONAL: u32 = raw::REDISMODULE_CMD_ARG_OPTIONAL;
const MULTIPLE: u32 = raw::REDISMODULE_CMD_ARG_MULTIPLE;
const MULTIPLE_TOKEN: u32 = raw::REDISMODULE_CMD_ARG_MULTIPLE_TOKEN;

const fn arg(name: &'static CStr, kind: Kind) -> Arg {
    Arg {
        name,
        kind,
        token: None,
        flags: 0,
        subargs: &[],
    }
}

const fn option(name: &'static CStr, token: &'static CStr, kind: Kind) -> Arg {
    Arg {
        token: Some(token),
        flags: OPTIONAL,
        ..arg(name, kind)
    }
}

const fn token(name: &'static CStr, token: &'static CStr) -> Arg {
    Arg {
        token: Some(token),
        ..arg(name, Kind::Token)
    }
}

const KEY: Arg = arg(c"key", Kind::Key);
const LIMIT: Arg = arg(c"limit", Kind::Integer);
const PERIOD: Arg = arg(c"period", Kind::String);
const ALGORITHM: Arg = Arg {
    subargs: &[
        token(c"fixed", c"FIXED"),
        token(c"sliding", c"SLIDING"),
        token(c"gcra", c"GCRA"),
    ],
    ..option(c"algorithm", c"ALGORITHM", Kind::OneOf)
};
const BURST: Arg = option(c"burst", c"BURST", Kind::Integer);
const COST: Arg = option(c"cost", c"COST", Kind::Integer);
const DRYRUN_OR_FORCE: Arg = Arg {
    flags: OPTIONAL,
    subargs: &[token(c"dryrun", c"DRYRUN"), token(c"force", c"FORCE")],
    ..arg(c"mode", Kind::OneOf)
};
const WITHWINDOW: Arg = Arg {
    flags: OPTIONAL,
    ..token(c"withwindow", c"WITHWINDOW")
};

/// What a command does with its keys, for its key spec.
#[derive(Clone, Copy)]
enum Keys {
    /// No key.
    None,
    /// One key at position 1.
    One(u64),
    /// `numkeys` at position 1, then that many keys.
    Counted(u64),
}

/// One command's documentation.
struct Doc {
    name: &'static CStr,
    summary: &'static CStr,
    complexity: &'static CStr,
    since: &'static CStr,
    history: &'static [(&'static CStr, &'static CStr)],
    arity: c_int,
    keys: Keys,
    args: &'static [Arg],
}

/// Reads the key's value and updates it.
const READ_WRITE: u64 = (raw::REDISMODULE_CMD_KEY_RW
    | raw::REDISMODULE_CMD_KEY_ACCESS
    | raw::REDISMODULE_CMD_KEY_UPDATE) as u64;

const DOCS: [Doc; 8] = [
    Doc {
        name: c"ratelimit.check",
        summary:
            c"Decides one request against a rate limit and, if it is admitted, spends its cost",
        complexity: c"O(1)",
        since: c"1.0.0",
        history: &[(c"2.0.0", c"Added the `FORCE` and `WITHWINDOW` options.")],
        arity: -4,
        keys: Keys::One(READ_WRITE),
        args: &[
            KEY,
            LIMIT,
            PERIOD,
            ALGORITHM,
            BURST,
            COST,
            DRYRUN_OR_FORCE,
            WITHWINDOW,
        ],
    },
    Doc {
        name: c"ratelimit.mcheck",
        summary: c"Decides one request against several rate limits at once, all or nothing",
        complexity: c"O(N) where N is the number of keys",
        since: c"2.0.0",
        history: &[],
        arity: -6,
        keys: Keys::Counted(READ_WRITE),
        args: &[
            arg(c"numkeys", Kind::Integer),
            Arg {
                flags: MULTIPLE,
                ..KEY
            },
            Arg {
                token: Some(c"LIMIT"),
                flags: MULTIPLE_TOKEN,
                subargs: &[LIMIT, PERIOD, ALGORITHM, BURST, COST],
                ..arg(c"policy", Kind::Block)
            },
            DRYRUN_OR_FORCE,
            WITHWINDOW,
        ],
    },
    Doc {
        name: c"ratelimit.quota",
        summary: c"Shows what a rate limit has left now, without spending",
        complexity: c"O(1)",
        since: c"1.0.0",
        history: &[(
            c"2.0.0",
            c"Answers the standing now (a fresh key shows the full capacity); added `COST`.",
        )],
        arity: -4,
        keys: Keys::One((raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS) as u64),
        args: &[KEY, LIMIT, PERIOD, ALGORITHM, BURST, COST],
    },
    Doc {
        name: c"ratelimit.refund",
        summary: c"Gives back units spent earlier, to the window they were spent in",
        complexity: c"O(1)",
        since: c"2.0.0",
        history: &[],
        arity: -6,
        keys: Keys::One(READ_WRITE),
        args: &[
            KEY,
            LIMIT,
            PERIOD,
            ALGORITHM,
            BURST,
            Arg { flags: 0, ..COST },
            option(c"window", c"WINDOW", Kind::Integer),
        ],
    },
    Doc {
        name: c"ratelimit.acquire",
        summary: c"Takes one of a limited number of concurrent leases, or renews one",
        complexity: c"O(log(N) + M) where N is the number of leases and M the number expired",
        since: c"2.0.0",
        history: &[],
        arity: -4,
        keys: Keys::One(READ_WRITE),
        args: &[
            KEY,
            LIMIT,
            arg(c"lease", Kind::String),
            option(c"id", c"ID", Kind::String),
        ],
    },
    Doc {
        name: c"ratelimit.release",
        summary: c"Releases a concurrent lease",
        complexity: c"O(log(N) + M) where N is the number of leases and M the number expired",
        since: c"2.0.0",
        history: &[],
        arity: 3,
        keys: Keys::One(READ_WRITE),
        args: &[KEY, arg(c"id", Kind::String)],
    },
    Doc {
        name: c"ratelimit.top",
        summary: c"Lists the keys this node denied most often, or forgets them",
        complexity:
            c"O(M + C log C) where M is the number of keys in the summary and C the count asked",
        since: c"2.0.0",
        history: &[],
        arity: -1,
        keys: Keys::None,
        args: &[Arg {
            flags: OPTIONAL,
            subargs: &[arg(c"count", Kind::Integer), token(c"reset", c"RESET")],
            ..arg(c"what", Kind::OneOf)
        }],
    },
    Doc {
        name: c"ratelimit.reset",
        summary: c"Deletes a rate limiter's state",
        complexity: c"O(1)",
        since: c"1.0.0",
        history: &[],
        arity: 2,
        keys: Keys::One((raw::REDISMODULE_CMD_KEY_RM | raw::REDISMODULE_CMD_KEY_DELETE) as u64),
        args: &[KEY],
    },
];

/// Registers every command's documentation where the server has `RedisModule_SetCommandInfo`.
/// Answers a line for the log: what was done, or which command the server refused.
pub(crate) fn register(ctx: &Context) -> Result<String, String> {
    // SAFETY: copies function pointers filled in by RedisModule_Init, to test them.
    let (get_command, set_info) =
        unsafe { (raw::RedisModule_GetCommand, raw::RedisModule_SetCommandInfo) };
    let (Some(get_command), Some(set_info)) = (get_command, set_info) else {
        return Ok("no COMMAND DOCS (RedisModule_SetCommandInfo not found)".into());
    };
    let mut refused = Vec::new();
    for doc in &DOCS {
        // SAFETY: in OnLoad, with its context; the command was created before.
        let command = unsafe { get_command(ctx.ctx, doc.name.as_ptr()) };
        let mut storage = Storage::default();
        let info = storage.info(doc);
        // SAFETY: `info` and everything it points to live in `storage` until the end of this
        // iteration; the server copies what it keeps.
        let status = !command.is_null()
            && unsafe { set_info(command, &info) } == raw::REDISMODULE_OK as c_int;
        if !status {
            refused.push(doc.name.to_string_lossy());
        }
    }
    if refused.is_empty() {
        Ok("COMMAND DOCS and key specs registered for every command".into())
    } else {
        Err(format!(
            "the server refused the docs of [{}]: COMMAND DOCS lacks them",
            refused.join(", ")
        ))
    }
}

/// The C structures of one command's documentation, kept alive for the call.
#[derive(Default)]
struct Storage {
    args: Vec<Vec<raw::RedisModuleCommandArg>>,
    key_specs: Vec<raw::RedisModuleCommandKeySpec>,
    history: Vec<raw::RedisModuleCommandHistoryEntry>,
}

/// The layout of the structures this module was built with, which the server reads by.
static VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
    version: 1,
    sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
    sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
    sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
};

impl Storage {
    fn info(&mut self, doc: &Doc) -> raw::RedisModuleCommandInfo {
        let (flags, find_keys_type, fk) = match doc.keys {
            Keys::None => (
                0,
                0,
                raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                    range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                        lastkey: 0,
                        keystep: 0,
                        limit: 0,
                    },
                },
            ),
            Keys::One(flags) => (
                flags,
                raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
                raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                    range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                        lastkey: 0,
                        keystep: 1,
                        limit: 0,
                    },
                },
            ),
            Keys::Counted(flags) => (
                flags,
                raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_KEYNUM,
                raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                    keynum: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_2 {
                        keynumidx: 0,
                        firstkey: 1,
                        keystep: 1,
                    },
                },
            ),
        };
        // SAFETY: the terminator: an all-zero spec (null pointers, zero numbers) is valid.
        let terminator: raw::RedisModuleCommandKeySpec = unsafe { std::mem::zeroed() };
        self.key_specs = vec![
            raw::RedisModuleCommandKeySpec {
                notes: ptr::null(),
                flags,
                begin_search_type:
                    raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
                bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
                    index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: 1 },
                },
                find_keys_type,
                fk,
            },
            terminator,
        ];
        if matches!(doc.keys, Keys::None) {
            self.key_specs = vec![terminator];
        }
        self.history = doc
            .history
            .iter()
            .map(|(since, changes)| raw::RedisModuleCommandHistoryEntry {
                since: since.as_ptr(),
                changes: changes.as_ptr(),
            })
            .collect();
        self.history.push(raw::RedisModuleCommandHistoryEntry {
            since: ptr::null(),
            changes: ptr::null(),
        });
        let args = self.args(doc.args);
        raw::RedisModuleCommandInfo {
            version: &VERSION,
            summary: doc.summary.as_ptr(),
            complexity: doc.complexity.as_ptr(),
            since: doc.since.as_ptr(),
            history: if doc.history.is_empty() {
                ptr::null_mut()
            } else {
                self.history.as_mut_ptr()
            },
            tips: ptr::null(),
            arity: doc.arity,
            key_specs: if matches!(doc.keys, Keys::None) {
                ptr::null_mut()
            } else {
                self.key_specs.as_mut_ptr()
            },
            args,
        }
    }

    /// A zero-terminated array of `args`, whose buffer stays in `self` (moving the `Vec` into
    /// `self.args` does not move its buffer).
    fn args(&mut self, args: &[Arg]) -> *mut raw::RedisModuleCommandArg {
        let mut list: Vec<raw::RedisModuleCommandArg> = args
            .iter()
            .map(|a| raw::RedisModuleCommandArg {
                name: a.name.as_ptr(),
                type_: match a.kind {
                    Kind::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
                    Kind::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
                    Kind::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                    Kind::Token => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
                    Kind::OneOf => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
                    Kind::Block => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
                },
                key_spec_index: if a.kind == Kind::Key { 0 } else { -1 },
                token: a.token.map_or(ptr::null(), CStr::as_ptr),
                summary: ptr::null(),
                since: ptr::null(),
                flags: a.flags as c_int,
                deprecated_since: ptr::null(),
                subargs: if a.subargs.is_empty() {
                    ptr::null_mut()
                } else {
                    self.args(a.subargs)
                },
                display_text: ptr::null(),
            })
            .collect();
        // SAFETY: the terminator: an all-zero argument (null pointers, zero numbers) is valid.
        list.push(unsafe { std::mem::zeroed() });
        let pointer = list.as_mut_ptr();
        self.args.push(list);
        pointer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument that takes sub-arguments has some, and only those do; tokens have a
    /// token: the rules the server checks before it accepts the docs.
    #[test]
    fn the_tables_are_well_formed() {
        fn check(args: &[Arg]) {
            for a in args {
                let grouping = matches!(a.kind, Kind::OneOf | Kind::Block);
                assert_eq!(grouping, !a.subargs.is_empty(), "{:?}", a.name);
                if a.kind == Kind::Token {
                    assert!(a.token.is_some(), "{:?}", a.name);
                }
                check(a.subargs);
            }
        }
        for doc in &DOCS {
            check(doc.args);
            assert!(doc.name.to_bytes().starts_with(b"ratelimit."));
        }
    }
}
