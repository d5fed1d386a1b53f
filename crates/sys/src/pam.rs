//! PAM: checking an account's password with the system's PAM stack, through `libpam.so.0`
//! loaded at run time (`dlopen`), so nothing is needed to build but the runtime library is
//! on every Debian host.
//!
//! [`authenticate`] runs `pam_start(service, user)`, sets `PAM_RHOST`, then
//! `pam_authenticate` and `pam_acct_mgmt` (an expired, locked or otherwise refused account
//! fails there), and `pam_end`. The conversation answers every `PAM_PROMPT_ECHO_OFF` with the
//! password and nothing else: a prompt with echo (a module asking for a user name or a
//! one-time code) ends the conversation with an error. Each answer is a copy made with libc's
//! `malloc`, as PAM frees it; the copies this module keeps are overwritten before they are
//! freed, and so is the caller's when [`authenticate`] returns.
//!
//! The executor calls this only in a helper process of its own (a module that crashes or
//! hangs takes the helper with it, not the root daemon): see the executor's `oauth::login`.
//! libpam stays loaded once loaded (PAM modules may leave handlers behind that `dlclose`
//! would unmap under them).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::sync::OnceLock;

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_RHOST: c_int = 4;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
/// Linux-PAM's bound on the messages of one conversation call.
const PAM_MAX_NUM_MSG: c_int = 32;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

type PamStart =
    unsafe extern "C" fn(*const c_char, *const c_char, *const PamConv, *mut *mut c_void) -> c_int;
type PamSetItem = unsafe extern "C" fn(*mut c_void, c_int, *const c_void) -> c_int;
type PamFlagsFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type PamEnd = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type PamStrerror = unsafe extern "C" fn(*mut c_void, c_int) -> *const c_char;

/// The functions of libpam this module calls.
struct Library {
    start: PamStart,
    set_item: PamSetItem,
    authenticate: PamFlagsFn,
    acct_mgmt: PamFlagsFn,
    end: PamEnd,
    strerror: PamStrerror,
}

/// The last `dlerror` text.
fn dl_error(what: &str) -> io::Error {
    // SAFETY: dlerror takes no arguments; it returns null or a NUL-terminated string that
    // stays valid until the next dl* call on this thread, and is copied at once.
    let text = unsafe { libc::dlerror() };
    let why = if text.is_null() {
        "unknown error".to_owned()
    } else {
        // SAFETY: non-null: a NUL-terminated string owned by libdl, read before any other
        // dl* call.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    };
    io::Error::other(format!("{what}: {why}"))
}

fn library() -> io::Result<&'static Library> {
    static LIBRARY: OnceLock<Result<Library, String>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| load().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))
}

fn load() -> io::Result<Library> {
    // SAFETY: the file name is a NUL-terminated literal; dlopen runs the library's
    // constructors, which libpam's are fit for (every PAM application loads it).
    let handle =
        unsafe { libc::dlopen(c"libpam.so.0".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(dl_error("cannot load libpam.so.0"));
    }
    let symbol = |name: &CStr| -> io::Result<*mut c_void> {
        // SAFETY: `handle` is a live handle from dlopen (never closed); `name` is
        // NUL-terminated.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if p.is_null() {
            Err(dl_error(&format!("libpam.so.0 has no {name:?}")))
        } else {
            Ok(p)
        }
    };
    // A symbol as the function pointer type of its C signature.
    macro_rules! function {
        ($name:literal, $ty:ty) => {{
            let p = symbol($name)?;
            // SAFETY: the symbol is the Linux-PAM function of that name, whose C signature
            // (pam_appl.h, stable since Linux-PAM 0.x) is the function pointer type it
            // becomes; a non-null address from dlsym is the function's.
            unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
        }};
    }
    Ok(Library {
        start: function!(c"pam_start", PamStart),
        set_item: function!(c"pam_set_item", PamSetItem),
        authenticate: function!(c"pam_authenticate", PamFlagsFn),
        acct_mgmt: function!(c"pam_acct_mgmt", PamFlagsFn),
        end: function!(c"pam_end", PamEnd),
        strerror: function!(c"pam_strerror", PamStrerror),
    })
}

/// How a PAM check ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right and the account may log in now.
    Accepted,
    /// Refused at `step` (`"authenticate"` or `"account"`) with PAM's `code` and its text
    /// (`pam_strerror`).
    Refused {
        step: &'static str,
        code: i32,
        text: String,
    },
}

/// Overwrites `buf` in a way the compiler may not drop as a dead store.
pub fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, exclusively borrowed byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Overwrites the bytes of `s` and empties it.
pub fn wipe_string(s: &mut String) {
    let mut bytes = std::mem::take(s).into_bytes();
    wipe(&mut bytes);
}

/// Overwrites a NUL-terminated C string allocated by `malloc` and frees it.
///
/// # Safety
/// `p` is null or a live `malloc`ed NUL-terminated string that nothing else uses or frees.
unsafe fn wipe_and_free(p: *mut c_char) {
    if p.is_null() {
        return;
    }
    // SAFETY: the caller promises a live NUL-terminated string.
    let len = unsafe { libc::strlen(p) };
    for i in 0..len {
        // SAFETY: `i < len`, inside the string's allocation.
        unsafe { std::ptr::write_volatile(p.add(i), 0) };
    }
    // SAFETY: allocated by malloc, freed once, here.
    unsafe { libc::free(p.cast()) };
}

/// The conversation: every `PAM_PROMPT_ECHO_OFF` is answered with the password
/// (`appdata` points to its NUL-terminated bytes), notices get no answer, anything else
/// ends the conversation with `PAM_CONV_ERR`.
///
/// # Safety
/// Called by libpam as `struct pam_conv` documents: `msg` holds `num_msg` message
/// pointers, `resp` is writable, `appdata` is what [`authenticate`] passed.
unsafe extern "C" fn conversation(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    if !(1..=PAM_MAX_NUM_MSG).contains(&num_msg) || msg.is_null() || resp.is_null() {
        return PAM_CONV_ERR;
    }
    let n = num_msg as usize;
    let password = appdata as *const c_char;
    // SAFETY: calloc of `n` zeroed responses (null `resp`, code 0); PAM frees the array and
    // every `resp` in it with `free`.
    let replies =
        unsafe { libc::calloc(n, std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    let give_up = |code: c_int| {
        for i in 0..n {
            // SAFETY: `replies` has `n` entries; each `resp` is null or our strdup.
            unsafe { wipe_and_free((*replies.add(i)).resp) };
        }
        // SAFETY: the array calloc gave, freed once.
        unsafe { libc::free(replies.cast()) };
        code
    };
    for i in 0..n {
        // SAFETY: Linux-PAM passes an array of `num_msg` pointers to messages.
        let m = unsafe { *msg.add(i) };
        if m.is_null() {
            return give_up(PAM_CONV_ERR);
        }
        // SAFETY: a message PAM made for this call, alive until we return.
        match unsafe { (*m).msg_style } {
            PAM_PROMPT_ECHO_OFF => {
                // SAFETY: `password` is the NUL-terminated copy `authenticate` keeps alive
                // for the whole of pam_authenticate/pam_acct_mgmt; strdup allocates with
                // malloc, as PAM frees.
                let copy = unsafe { libc::strdup(password) };
                if copy.is_null() {
                    return give_up(PAM_BUF_ERR);
                }
                // SAFETY: entry `i < n` of our array.
                unsafe { (*replies.add(i)).resp = copy };
            }
            PAM_ERROR_MSG | PAM_TEXT_INFO => {}
            // PAM_PROMPT_ECHO_ON (a user name, a one-time code) and anything unknown.
            _ => return give_up(PAM_CONV_ERR),
        }
    }
    // SAFETY: `resp` is writable (checked non-null); PAM takes the array.
    unsafe { *resp = replies };
    PAM_SUCCESS
}

/// Checks `password` for `user` with the PAM stack of `service` (`/etc/pam.d/<service>`),
/// `rhost` the client's address: `pam_authenticate` then `pam_acct_mgmt`. `Err` when libpam
/// cannot be loaded or the transaction cannot start (a malformed service, no memory); a
/// wrong password or a refused account is `Ok(Verdict::Refused)`. `password` is overwritten
/// before this returns.
pub fn authenticate(
    service: &str,
    user: &str,
    rhost: &str,
    password: &mut Vec<u8>,
) -> io::Result<Verdict> {
    let result = run(service, user, rhost, password);
    wipe(password);
    password.clear();
    result
}

fn run(service: &str, user: &str, rhost: &str, password: &[u8]) -> io::Result<Verdict> {
    let nul = |what: &str| io::Error::other(format!("{what} contains NUL"));
    let service = CString::new(service).map_err(|_| nul("service"))?;
    let user = CString::new(user).map_err(|_| nul("user"))?;
    let rhost = CString::new(rhost).map_err(|_| nul("rhost"))?;
    if password.contains(&0) {
        return Err(nul("password"));
    }
    let lib = library()?;
    // Our copy, NUL-terminated, overwritten when this function ends (also on early return).
    struct Secret(Vec<u8>);
    impl Drop for Secret {
        fn drop(&mut self) {
            wipe(&mut self.0);
        }
    }
    let mut secret = Secret(Vec::with_capacity(password.len() + 1));
    secret.0.extend_from_slice(password);
    secret.0.push(0);
    let conv = PamConv {
        conv: Some(conversation),
        appdata_ptr: secret.0.as_ptr() as *mut c_void,
    };
    let mut handle: *mut c_void = std::ptr::null_mut();
    // SAFETY: NUL-terminated service and user; `conv` lives until pam_end below (libpam
    // copies the struct anyway); `handle` is written by pam_start.
    let rc = unsafe { (lib.start)(service.as_ptr(), user.as_ptr(), &conv, &mut handle) };
    if rc != PAM_SUCCESS {
        if !handle.is_null() {
            // SAFETY: a handle pam_start made, ended once.
            unsafe { (lib.end)(handle, rc) };
        }
        return Err(io::Error::other(format!("pam_start failed ({rc})")));
    }
    let text = |rc: c_int| {
        // SAFETY: a live handle; pam_strerror returns a static string (or null).
        let p = unsafe { (lib.strerror)(handle, rc) };
        if p.is_null() {
            format!("PAM error {rc}")
        } else {
            // SAFETY: non-null: a NUL-terminated static string.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: a live handle; PAM copies the NUL-terminated item.
    let mut rc = unsafe { (lib.set_item)(handle, PAM_RHOST, rhost.as_ptr().cast()) };
    let verdict = if rc != PAM_SUCCESS {
        Err(io::Error::other(format!(
            "pam_set_item(PAM_RHOST): {}",
            text(rc)
        )))
    } else {
        // SAFETY: a live handle; the conversation reads `secret`, alive until the end of
        // this function.
        rc = unsafe { (lib.authenticate)(handle, PAM_DISALLOW_NULL_AUTHTOK) };
        if rc != PAM_SUCCESS {
            Ok(Verdict::Refused {
                step: "authenticate",
                code: rc,
                text: text(rc),
            })
        } else {
            // SAFETY: as above.
            rc = unsafe { (lib.acct_mgmt)(handle, PAM_DISALLOW_NULL_AUTHTOK) };
            if rc != PAM_SUCCESS {
                Ok(Verdict::Refused {
                    step: "account",
                    code: rc,
                    text: text(rc),
                })
            } else {
                Ok(Verdict::Accepted)
            }
        }
    };
    // SAFETY: the handle pam_start made, ended once with the last status.
    unsafe { (lib.end)(handle, rc) };
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpam_loads_and_an_unknown_account_is_refused() {
        // Without /etc/pam.d/<service>, PAM uses `other` (Debian: the common stacks, which
        // refuse an account that does not exist); either way nothing is accepted.
        let mut password = b"not the password".to_vec();
        let verdict = authenticate(
            "mymcp-test-no-such-service",
            "no-such-user-mymcp",
            "192.0.2.1",
            &mut password,
        )
        .unwrap();
        assert!(matches!(verdict, Verdict::Refused { .. }), "{verdict:?}");
        assert!(password.is_empty(), "the caller's password is overwritten");
    }

    #[test]
    fn a_nul_anywhere_is_refused_before_pam() {
        let mut password = b"a\0b".to_vec();
        assert!(authenticate("mymcp", "alice", "x", &mut password).is_err());
        assert!(password.is_empty());
        assert!(authenticate("my\0mcp", "alice", "x", &mut b"p".to_vec()).is_err());
    }

    #[test]
    fn wiping_overwrites_and_empties() {
        let mut b = b"secret".to_vec();
        wipe(&mut b);
        assert_eq!(b, [0; 6]);
        let mut s = String::from("secret");
        wipe_string(&mut s);
        assert!(s.is_empty());
    }
}
