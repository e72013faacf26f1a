//! Crash and fault torture for statesafe (being written).
