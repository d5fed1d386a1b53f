//! `read_file`: streamed, paginated reads with bounded memory.
