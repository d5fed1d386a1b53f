//! Every `unsafe` block and raw syscall of the executor, each with its `SAFETY:` argument.

pub mod process;
