//! `bash_execute`: runs a shell command in its own session with bounded capture and a hard deadline.
