// The board's UART as sim/mpvm/serial_repl.mjs sees it: bytes in on fd 0, out on fd 1.
//
// What makes it a chip's UART rather than a stream:
// - Output is cooked as the chip's sys.stdout is: the VM writes print()'s "\n" as is, the
//   chip sends "\r\n" (its REPL already writes "\r\n").
// - Nobody reading the line (the pty's buffer full for 2 s) does not stop the board: what it
//   sends is lost, as from a UART, until someone reads again.
// - While Python runs, node's event loop is blocked: poll() takes what has arrived straight
//   from the fd, and a Ctrl-C among it calls interrupt() (a KeyboardInterrupt), as the chip's
//   UART interrupt does. poll() must not block: a pty master comes non-blocking
//   (sim/serial_board.py sets it); a pipe is reopened non-blocking (a new open file
//   description, so node's own stdin stream is unaffected).
import fs from "node:fs";

const CTRL_C = 0x03;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

export const nap = (ms) => Atomics.wait(sleeper, 0, 0, ms);

export class SerialLine {
  constructor() {
    this.interrupt = () => {}; // what a Ctrl-C does while Python runs
    this.muted = false; // the chip is resetting: what it still prints is not sent
    this._rx = Buffer.alloc(0); // received, not yet taken
    this._tx = []; // to send
    this._last = 0; // the last byte sent
    this._heard = null; // a string while hear() collects
    this._stalled = false;
    this._chunk = Buffer.alloc(4096);
    this._fd = fs.fstatSync(0).isFIFO()
      ? fs.openSync("/proc/self/fd/0", fs.constants.O_RDONLY | fs.constants.O_NONBLOCK) : 0;
  }

  // bytes from node's stdin stream (the event loop's turn)
  receive(data) {
    this._rx = Buffer.concat([this._rx, data]);
  }

  // the next byte received, or -1
  next() {
    if (!this._rx.length) return -1;
    const c = this._rx[0];
    this._rx = this._rx.subarray(1);
    return c;
  }

  send(bytes) {
    if (this.muted) return;
    if (typeof bytes === "string") bytes = Buffer.from(bytes, "latin1");
    if (this._heard !== null) {
      this._heard += Buffer.from(bytes).toString("latin1");
      return;
    }
    for (const b of bytes) {
      if (b === 10 && this._last !== 13) this._tx.push(13);
      this._tx.push(b);
      this._last = b;
    }
    if (this._tx.length >= 512) this.flush();
  }

  // What fn() sends, as a string, kept off the line for the caller to judge and send on.
  hear(fn) {
    this._heard = "";
    try {
      fn();
      return this._heard;
    } finally {
      this._heard = null;
    }
  }

  flush() {
    let buf = Buffer.from(this._tx);
    this._tx = [];
    for (let waited = 0; buf.length;) {
      try {
        buf = buf.subarray(fs.writeSync(1, buf));
        this._stalled = false;
      } catch (err) {
        if (err.code !== "EAGAIN") process.exit(0); // the line is gone
        if (this._stalled || waited >= 2000) {
          this._stalled = true;
          return;
        }
        nap(5);
        waited += 5;
      }
    }
  }

  // Take what arrived while Python runs; true if a Ctrl-C came (interrupt() was called).
  poll() {
    // bytes taken earlier (by node while the VM booted, as its event loop turns while the
    // wasm loads, or behind the command that runs now): a Ctrl-C among them is for the code
    // that runs now
    let interrupted = this._cut(this._rx.indexOf(CTRL_C));
    for (;;) {
      let n;
      try {
        n = fs.readSync(this._fd, this._chunk, 0, this._chunk.length, null);
      } catch (err) {
        if (err.code === "EAGAIN" || err.code === "EOF") return interrupted;
        throw err;
      }
      if (n === 0) return interrupted;
      const at = this._rx.length;
      this.receive(this._chunk.subarray(0, n));
      if (!interrupted) interrupted = this._cut(this._rx.indexOf(CTRL_C, at));
    }
  }

  // the Ctrl-C at `at` (if any) becomes an interrupt instead of a byte received
  _cut(at) {
    if (at < 0) return false;
    this._rx = Buffer.concat([this._rx.subarray(0, at), this._rx.subarray(at + 1)]);
    this.interrupt();
    return true;
  }
}
