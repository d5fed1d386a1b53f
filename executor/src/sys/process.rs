//! Process-related syscalls for `spawn` (setsid, signals to process groups, fd hygiene).
