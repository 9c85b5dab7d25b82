//! Unit tests of the DNS module: answer policy tables, geo placement, config validation,
//! and the request path on raw packets.
