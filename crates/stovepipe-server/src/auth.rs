//! Authentication and authorisation (placeholder; being written).
