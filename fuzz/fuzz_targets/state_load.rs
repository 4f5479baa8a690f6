//! The state directory as `fleetgate` reads it at every command: `StateDir::load` on a
//! state file (`upgrade_state.json`, fleetgate's or HART's) or on the record of completed
//! releases (`releases.json`), corrupt ones moved aside. Checks: a state it loads, it
//! saves and loads again unchanged.
//!
//! Input: selector byte (bit 0: the bytes are `releases.json`, else the state file),
//! then the file's bytes.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use fleetgate_store::StateDir;
use libfuzzer_sys::fuzz_target;

static DIR: LazyLock<PathBuf> = LazyLock::new(|| fleetgate_fuzz::scratch_dir("state"));

fn clear(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((sel, bytes)) = fleetgate_fuzz::split_first(data) else {
        return;
    };
    clear(&DIR);
    let store = StateDir::open(DIR.as_path()).expect("open the state directory");
    let path = if sel & 1 == 1 {
        store.releases_path()
    } else {
        store.state_path()
    };
    std::fs::write(&path, bytes).expect("write the input");
    if let Ok(state) = store.load() {
        store.save(&state).expect("save a loaded state");
        let again = store.load().expect("load a saved state");
        assert_eq!(again, state, "a loaded state changed through save and load");
    }
});
