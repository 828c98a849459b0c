//! `tributary dev-key FILE`: the one-shot of `docker compose up` without a `.env`. It makes
//! a development secret key once, keeps it in FILE (a named volume) for the services'
//! `TRIBUTARY_SECRET_KEY_FILE`, and says loudly that it is one. When `TRIBUTARY_SECRET_KEY`
//! is set, the services use that and the file is left alone.

use std::path::Path;

use crate::dev::settings::read_or_generate_key;

/// `explicit_key` is the value of `TRIBUTARY_SECRET_KEY` (empty when unset).
pub fn run(file: &Path, explicit_key: &str) -> anyhow::Result<()> {
    if !explicit_key.trim().is_empty() {
        println!("TRIBUTARY_SECRET_KEY is set: the services use it, no development key is made");
        return Ok(());
    }
    let (_, generated) = read_or_generate_key(file)?;
    let what = if generated {
        format!("GENERATED a development secret key in {}", file.display())
    } else {
        format!(
            "using the development secret key kept in {}",
            file.display()
        )
    };
    let rule = "!".repeat(78);
    println!("{rule}");
    println!("!! {what}");
    println!("!! It encrypts the tenants' shared secrets. It is a DEVELOPMENT key: it lives only");
    println!("!! in this volume, and losing the volume loses every installed tenant.");
    println!("!! For a real deployment set your own: `openssl rand -base64 32` into");
    println!("!! TRIBUTARY_SECRET_KEY in .env (see .env.example), then `docker compose up` again.");
    println!("{rule}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("tributary-dev-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("secret-key");
        run(&file, "").expect("generated");
        let first = std::fs::read_to_string(&file).expect("written");
        run(&file, "").expect("kept");
        run(&file, "c2V0IGJ5IHRoZSBvcGVyYXRvcg==").expect("nothing to do");
        assert_eq!(std::fs::read_to_string(&file).expect("still there"), first);
        let config = tributary_common::Config::load_from(
            None,
            [(
                "TRIBUTARY_SECRET_KEY_FILE".to_string(),
                file.display().to_string(),
            )],
        )
        .expect("the services load it");
        assert!(config.secret_keyring().is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
