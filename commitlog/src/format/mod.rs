//! On-disk layout of the commit log. Pure: no I/O.
//!
//! Records and the end-of-segment marker are laid out by [`protocol::record`] (re-exported
//! here), the one home of the record codec, which the client uses too without linking the
//! storage engine. This module adds the log's own meta files.
//!
//! # Checkpoint and clean-shutdown files ([`Meta`])
//!
//! | offset | size | field       | notes                                          |
//! |-------:|-----:|-------------|------------------------------------------------|
//! |      0 |    4 | `magic` u32 | [`META_MAGIC`]                                 |
//! |      4 |    1 | `version`   | [`META_VERSION`]                               |
//! |      5 |    1 | `kind`      | 1 = checkpoint, 2 = clean shutdown, 3 = truncate |
//! |      6 |    2 | reserved    | 0                                              |
//! |      8 |    8 | `offset` u64| durable end, log end, or the truncation point  |
//! |     16 |    4 | `crc` u32   | CRC32 of bytes `0..16`                         |

//!
//! The epoch file's layout is in [`epoch`].

pub mod epoch;
mod meta;

pub use epoch::{decode_epochs, encode_epochs, EpochEntry};
pub use meta::{Meta, MetaKind, META_LEN, META_MAGIC, META_VERSION};
pub use protocol::record::*;
