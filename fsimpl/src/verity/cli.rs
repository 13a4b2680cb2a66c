//! The `tessera verity` subcommand (in progress).
