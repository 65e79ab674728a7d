//! A pending step-up challenge as a compact binary value, for a store shared between
//! replicas (a callback may land on another replica than the one that challenged).
//! Led by a version byte; decoding refuses anything short, long or out of range.

use std::sync::Arc;

use super::challenge::{Kind, Pending};
use crate::session::redis::codec::{put_str, CodecError, Reader};
use crate::session::{Secs, SessionKey};

pub const PENDING_VERSION: u8 = 1;

pub fn encode_pending(p: &Pending) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128 + p.return_to.as_ref().map_or(0, String::len) + p.redirect_uri.len());
    out.push(PENDING_VERSION);
    // The session sits at bytes 2..17 (1-based): the take script reads it there.
    out.extend_from_slice(&p.session.0);
    out.extend_from_slice(&p.created.to_be_bytes());
    // Bit 2 marks an identification; a value without it (written before identifications
    // existed too) is a step-up.
    out.push(u8::from(p.user.is_some()) | (u8::from(p.return_to.is_some()) << 1) | (u8::from(p.kind == Kind::Identify) << 2));
    put_str(&mut out, p.user.as_deref().unwrap_or(""))?;
    put_str(&mut out, &p.verifier)?;
    put_str(&mut out, &p.nonce)?;
    put_str(&mut out, p.return_to.as_deref().unwrap_or(""))?;
    put_str(&mut out, &p.redirect_uri)?;
    Ok(out)
}

pub fn decode_pending(buf: &[u8]) -> Result<Pending, CodecError> {
    let mut r = Reader { buf };
    let version = r.u8()?;
    if version != PENDING_VERSION {
        return Err(CodecError::Version(version));
    }
    let mut session = [0u8; 16];
    session.copy_from_slice(r.take(16)?);
    let created: Secs = r.u32()?;
    let flags = r.u8()?;
    if flags > 7 {
        return Err(CodecError::Invalid);
    }
    let user = r.str()?;
    let verifier = r.str()?.to_owned();
    let nonce = r.str()?.to_owned();
    let return_to = r.str()?;
    let redirect_uri = r.str()?.to_owned();
    r.end()?;
    Ok(Pending {
        kind: if flags & 4 != 0 { Kind::Identify } else { Kind::StepUp },
        session: SessionKey(session),
        user: (flags & 1 != 0).then(|| Arc::from(user)),
        verifier,
        nonce,
        return_to: (flags & 2 != 0).then(|| return_to.to_owned()),
        redirect_uri,
        created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pending {
        Pending {
            kind: Kind::StepUp,
            session: SessionKey([9; 16]),
            user: Some(Arc::from("alice")),
            verifier: "v".repeat(43),
            nonce: "n".repeat(22),
            return_to: Some("/admin/users?page=2".into()),
            redirect_uri: "https://admin.example/.tether/callback".into(),
            created: 1_700_000_000,
        }
    }

    fn same(p: &Pending, q: &Pending) -> bool {
        (p.kind, p.session, &p.user, &p.verifier, &p.nonce, &p.return_to, &p.redirect_uri, p.created)
            == (q.kind, q.session, &q.user, &q.verifier, &q.nonce, &q.return_to, &q.redirect_uri, q.created)
    }

    #[test]
    fn pending_round_trips_and_every_truncation_is_refused() {
        let p = sample();
        let v = encode_pending(&p).unwrap();
        assert!(same(&decode_pending(&v).unwrap(), &p));
        let bare = Pending { user: None, return_to: None, ..sample() };
        assert!(same(&decode_pending(&encode_pending(&bare).unwrap()).unwrap(), &bare));
        let identify = Pending { kind: Kind::Identify, user: None, ..sample() };
        assert!(same(&decode_pending(&encode_pending(&identify).unwrap()).unwrap(), &identify));
        for n in 0..v.len() {
            assert!(decode_pending(&v[..n]).is_err(), "cut at {n} accepted");
        }
        let mut long = v.clone();
        long.push(0);
        assert_eq!(decode_pending(&long).err(), Some(CodecError::Trailing));
    }
}
