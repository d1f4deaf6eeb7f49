"""The device label: DevEUI, name and a LoRa Alliance TR005 QR code, for the terminal and as an
SVG or PNG file (segno draws the code).

TR005 ("LoRaWAN Device Identification QR Codes"): `LW:D0:<JoinEUI>:<DevEUI>:<ProfileID>`, EUIs
as 16 upper-case hex digits, ProfileID 8 hex digits (VendorID then VendorProfileID), optional
fields after it each behind its own letter (S: serial number). A network's onboarding app scans
it to claim the device; the AppKey is never on the label.
"""

import html

import segno

# streetgrid has no LoRa Alliance VendorID: 0000, and one VendorProfileID per device kind
PROFILE_IDS = {"pole": "00000001", "meter": "00000002"}


def tr005(join_eui, dev_eui, profile_id, serial=None):
    """The TR005 text of a device."""
    for name, v, n in (("JoinEUI", join_eui, 16), ("DevEUI", dev_eui, 16),
                       ("ProfileID", profile_id, 8)):
        if len(v) != n or any(c not in "0123456789abcdefABCDEF" for c in v):
            raise ValueError("TR005 %s must be %d hex digits, got %r" % (name, n, v))
    text = "LW:D0:%s:%s:%s" % (join_eui.upper(), dev_eui.upper(), profile_id.upper())
    if serial:
        if ":" in serial:
            raise ValueError("TR005 serial number must not contain ':'")
        text += ":S" + serial
    return text


def terminal_text(qr, dev_eui, name):
    """The label for a terminal: the code in block characters, then DevEUI and name."""
    import io

    buf = io.StringIO()
    qr.terminal(out=buf, compact=True, border=2)
    return "%s\nDevEUI %s\n%s\n" % (buf.getvalue().rstrip("\n"), dev_eui.upper(), name)


def save(qr, path, dev_eui, name, scale=8):
    """The label file: .svg with the code and both lines of text under it, .png the code alone
    (for a label printer's own template)."""
    if path.lower().endswith(".png"):
        qr.save(path, kind="png", scale=scale, border=4)
        return
    if not path.lower().endswith(".svg"):
        raise ValueError("label file must end in .svg or .png: %r" % path)
    size = qr.symbol_size(scale=scale, border=4)[0]
    code = qr.svg_inline(scale=scale, border=4, omitsize=False)
    text_y = size + 18
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           'viewBox="0 0 {w} {h}"><rect width="100%" height="100%" fill="#fff"/>{code}'
           '<text x="{c}" y="{y1}" font-family="monospace" font-size="16" '
           'text-anchor="middle">DevEUI {eui}</text>'
           '<text x="{c}" y="{y2}" font-family="sans-serif" font-size="16" '
           'text-anchor="middle">{name}</text></svg>\n').format(
        w=size, h=size + 48, code=code, c=size // 2, y1=text_y, y2=text_y + 22,
        eui=dev_eui.upper(), name=html.escape(name))
    with open(path, "w", encoding="utf-8") as f:
        f.write(svg)


def make(join_eui, dev_eui, kind, serial=None, profile_id=None):
    """(TR005 text, segno QR code) of a device."""
    text = tr005(join_eui, dev_eui, profile_id or PROFILE_IDS[kind], serial)
    return text, segno.make(text, error="m", micro=False)
