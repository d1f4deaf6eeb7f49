"""Flash a MicroPython firmware image onto a pole's or a meter's ESP32 / ESP32-S3 through the
board's serial port, with esptool's own Python API: connect to the ROM bootloader, start the
flasher stub, erase the whole chip, write the image at the chip's bootloader offset, verify it
by MD5, reset the board.

Why erase all: a board that ran other firmware keeps its file system and NVS partitions
otherwise, and MicroPython would boot on the old /config.json. With --no-stub (the ROM loader
only, for a board where the stub will not start) the chip cannot be erased whole; only the
sectors the image covers are, and the tool says so.

Every failure ends as one FlashError whose message says what happened and what to do, in
one line: esptool's FatalErrors and pyserial's exceptions are translated here (by errno and
by esptool's message), so a technician never sees a traceback.
"""

import contextlib
import re
import sys

CHIPS = {  # --chip: (esptool's name, where the image starts in flash)
    "esp32": ("ESP32", 0x1000),
    "esp32s3": ("ESP32-S3", 0x0),
}
ROM_BAUD = 115200  # the ROM syncs at this rate; a faster --baud is switched to afterwards
DEFAULT_BAUD = 460800
DEFAULT_CONNECT_ATTEMPTS = 7  # esptool's own default


class FlashError(Exception):
    """A failure the technician can act on; str() is the one line to print."""


def read_firmware(path):
    try:
        with open(path, "rb") as f:
            image = f.read()
    except OSError as e:
        raise FlashError("cannot read firmware %s: %s" % (path, e.strerror or e)) from None
    if not image:
        raise FlashError("firmware %s is empty: download the .bin again" % path)
    return image


def flash(port, chip, firmware, baud=DEFAULT_BAUD, stub=True,
          connect_attempts=DEFAULT_CONNECT_ATTEMPTS):
    """Flash `firmware` (a path) onto the `chip` ("esp32"/"esp32s3") answering on `port`.
    Progress goes to stdout (esptool's, warnings included); raises FlashError."""
    from esptool import cmds  # here, so that building the CLI's parser does not import it

    chip_name, offset = CHIPS[chip]
    image = read_firmware(firmware)
    with _esptool_output_on_stdout():
        try:
            esp = cmds.connect_esp(port=port, chip=chip, initial_baud=min(ROM_BAUD, baud),
                                   connect_attempts=connect_attempts)
        except Exception as e:
            raise FlashError(explain(e, port, chip_name)) from None
        try:
            _flash_connected(esp, image, offset, baud, stub)
        except Exception as e:
            raise FlashError(explain(e, port, chip_name)) from None
        finally:
            esp._port.close()


def _flash_connected(esp, image, offset, baud, stub):
    from esptool import cmds

    mac = ":".join("%02x" % b for b in esp.read_mac())
    print("Connected to %s, MAC %s" % (esp.get_chip_description(), mac), flush=True)
    if stub:
        esp = cmds.run_stub(esp)
    if baud > ROM_BAUD:
        esp.change_baud(baud)
    cmds.attach_flash(esp)
    if stub:
        cmds.erase_flash(esp)
    else:
        print("--no-stub: the ROM loader cannot erase the whole chip; only the sectors "
              "the image covers are erased", flush=True)
    cmds.write_flash(esp, [(offset, image)])
    cmds.verify_flash(esp, [(offset, image)])
    cmds.reset_chip(esp, "hard-reset")
    print("Flashed %d bytes at 0x%x and verified." % (len(image), offset), flush=True)


def explain(error, port, chip_name):
    """The one-line message for an exception raised while talking to the board."""
    from esptool.loader import WRITE_BLOCK_ATTEMPTS

    errno = _errno(error)
    text = " ".join(str(error).split()).split(" For troubleshooting")[0]
    if errno == 2:
        return ("port %s does not exist: check the USB cable and the port name "
                "(ls /dev/ttyUSB* /dev/ttyACM*)" % port)
    if errno in (11, 16):  # EAGAIN from the exclusive lock, EBUSY from TIOCEXCL
        return ("port %s is busy: another program has it open (a serial monitor, mpremote, "
                "another flash); close it and try again" % port)
    if errno == 13:
        return ("no permission to open %s: add yourself to the dialout group "
                "(sudo usermod -aG dialout $USER) and log in again" % port)
    wrong = re.search(r"This chip is (\S+), not (\S+)\.", text)
    if wrong:
        other = [k for k, (name, _) in CHIPS.items() if name == wrong.group(1)]
        hint = ": use --chip %s and its firmware" % other[0] if other else ""
        return "the board on %s is an %s, not an %s%s" % (port, wrong.group(1), chip_name, hint)
    if "Failed to connect" in text:
        return ("no answer from the %s bootloader on %s: the board is not in download mode "
                "(hold BOOT, press and release EN/RST, release BOOT) or TX/RX are not "
                "connected" % (chip_name, port))
    block = re.search(r"after seq (\d+) \(result was (\w+)", text)
    if block and block.group(2) in ("C100", "0107"):  # stub's / ROM's bad data checksum
        return ("data block %s arrived corrupted %d times in a row: the serial line is "
                "noisy; use a shorter USB cable or --baud 115200 and flash again"
                % (block.group(1), WRITE_BLOCK_ATTEMPTS))
    if block and block.group(2) == "0108":  # the ROM read the block back wrong
        return ("the flash chip did not keep block %s (flash write error): flash again; "
                "if it repeats, the flash chip is faulty" % block.group(1))
    if "does not match data in flash" in text or "Verification failed" in text:
        return ("verification failed: the flash does not hold what was written (MD5 "
                "mismatch): flash again; if it repeats, the flash chip is faulty")
    if "will not fit" in text:
        return "the firmware does not fit in the board's flash: is it the right .bin?"
    if re.search(r"(is not|does not contain) an \S+ image", text):
        return "the firmware is not built for the %s: use the %s build" % (chip_name, chip_name)
    if errno is not None or "serial" in text.lower() or "packet" in text.lower():
        return ("lost the connection to the board on %s (%s): check the cable and flash "
                "again" % (port, text))
    return "esptool: %s" % text


def _errno(error):
    """The OS errno behind an exception, following the cause/context chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(getattr(error, "errno", None), int):
            return error.errno
        error = error.__cause__ or error.__context__
    return None


def _esptool_output_on_stdout():
    """esptool prints its warnings on stderr (through Rich consoles that follow sys.stderr);
    while flashing they join the rest of its progress on stdout, so that stderr carries only
    the one error line."""
    return contextlib.redirect_stderr(sys.stdout)
