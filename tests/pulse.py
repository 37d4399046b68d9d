"""A real microphone path for tests: PulseAudio with a null sink, captured through PortAudio.

There is no sound card here. A private `pulseaudio` child process (as root, in user mode, with
its runtime and state under a temp dir) gets one null sink `vsink` (s16le, mono, 16 kHz). What
`paplay --device=vsink` plays into it appears on its monitor source `vsink.monitor`, which is
the default (and only) source, so PortAudio's ALSA device "pulse" (from libasound2-plugins)
records it: `audio.device: pulse`. At 16 kHz mono the capture is bit-exact after alignment.

Use from a test module (or list "tests.pulse" in the root conftest's `pytest_plugins`)::

    from tests.pulse import pulse_sink_fixture, wait_for_audio  # noqa: F401

    def test_capture(pulse_sink):
        src = MicSource(AudioConfig(device=pulse_sink.device, sample_rate=16000), 16000)
        src.start()
        wait_for_audio(src.read)                 # capture delivers data before we play
        player = pulse_sink.play("clip.flac")    # padded with 100 ms of silence each side
        ...read while player.poll() is None...

Subprocesses (a `soundmon run` under test) inherit PULSE_SERVER etc. from os.environ, or take
`pulse_sink.env`.

Order matters: PortAudio enumerates devices when it initialises (at `import sounddevice`),
and test modules import sounddevice during collection, before any fixture runs. So after the
server is up, the fixture re-initialises PortAudio (`sd._terminate(); sd._initialize()`), which
is verified to make "pulse" appear. No stream may be open at that moment (there is none at
session start).

Also here: an ALSA `file` plugin device, `pulse_sink.file_device` ("soundmon_file"): a PCM
whose capture side reads raw s16le mono 16 kHz from a file with no clock at all (PortAudio
gets it as fast as it can read). Deterministic and fast; `set_file_input()` sets what it
returns (the file is opened when a stream opens). Past the end of the file the plugin keeps
repeating its last period (measured: the last 3200 frames), so use exactly the file's length.
A MicSource on it overruns its ring at once: good for testing drops and digital zeros.

Real failures for the source's recovery: `kill_server()` / `start_server()` (the stream dies
with a PortAudio error, like an unplugged USB mic, and "pulse" disappears until restart) and
`suspend(True/False)` (the sink stops, so callbacks stop: a real stall).

Quirk measured here: the first PortAudio stream on "pulse" in a process often delivers its
first callback only after ~2 s (PortAudio's ALSA host gives up polling the pulse plugin after
2048 empty polls and restarts the PCM, which then runs normally). The fixture opens and closes
one warm-up stream so that tests start fast; `wait_for_audio` is still the rule.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

__all__ = ["PulseSink", "align", "pulse_sink_fixture", "wait_for_audio"]

SINK = "vsink"
SINK_RATE = 16000
FILE_DEVICE = "soundmon_file"
_ALSA_DEFAULT_CONFIG = "/usr/share/alsa/alsa.conf"
_INSTALL_HINT = "apt-get install -y pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"


class PulseSink:
    """A running private PulseAudio server with the null sink `vsink`; see the module docstring.

    `device` is the value for `audio.device` ("pulse"); `device_index` the PortAudio index of
    the same device in this process; `file_device` the ALSA file-plugin device.
    """

    device = "pulse"
    file_device = FILE_DEVICE
    sink = SINK
    source = SINK + ".monitor"
    rate = SINK_RATE

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="soundmon-pulse-"))
        self.runtime = self.tmp / "runtime"
        self.runtime.mkdir(mode=0o700)
        self.socket = self.runtime / "native"
        self.server = f"unix:{self.socket}"
        self.log_path = self.tmp / "pulseaudio.log"
        self.file_input = self.tmp / "file-input.s16le"
        self.alsa_conf = self.tmp / "soundmon-test-alsa.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.device_index: int | None = None
        self._saved_env: dict[str, str | None] = {}
        self._n = 0
        # What a client (this process, paplay, a daemon under test) needs to reach the server.
        self.env: dict[str, str] = {
            "PULSE_SERVER": self.server,
            "PULSE_SINK": SINK,
            "PULSE_SOURCE": self.source,
            "PULSE_COOKIE": str(self.tmp / "cookie"),  # keep libpulse from touching ~/.config
            "ALSA_CONFIG_PATH": self._alsa_config_path(),
        }

    # ---- server lifecycle ---------------------------------------------------------------
    def _server_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("PULSE_SERVER", "PULSE_SINK", "PULSE_SOURCE", "PULSE_COOKIE"):
            env.pop(key, None)
        # Root may run PulseAudio in user mode (it warns); its home, config and runtime all go
        # under the temp dir so nothing of the machine's (or another test run's) is touched.
        env.update(
            HOME=str(self.tmp),
            XDG_RUNTIME_DIR=str(self.runtime),
            XDG_CONFIG_HOME=str(self.tmp / "config"),
            XDG_STATE_HOME=str(self.tmp / "state"),
            PULSE_RUNTIME_PATH=str(self.runtime / "pulse"),
            PULSE_STATE_PATH=str(self.tmp / "state" / "pulse"),
        )
        return env

    def start_server(self, timeout: float = 10.0) -> None:
        """Start (or restart) `pulseaudio` on the same socket; raise RuntimeError if it fails."""
        exe = shutil.which("pulseaudio")
        if exe is None:
            raise FileNotFoundError(f"pulseaudio is not installed ({_INSTALL_HINT})")
        cmd = [
            exe,
            "--daemonize=no",
            "--system=false",
            "-n",  # no default.pa: only the modules below
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--realtime=no",
            "--high-priority=no",
            "--log-target=stderr",
            f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
            f"--load=module-null-sink sink_name={SINK} format=s16le rate={SINK_RATE} channels=1",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(cmd, env=self._server_env(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.proc.returncode}: {self.log_tail()}")
            if self.socket.exists() and self.pactl("info", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"pulseaudio did not answer within {timeout} s: {self.log_tail()}")

    def kill_server(self) -> None:
        """Stop the server abruptly (SIGKILL): open streams fail like an unplugged USB mic."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        if self.socket.exists():
            self.socket.unlink()

    def stop_server(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_running(self) -> None:
        """Restart the server if a test stopped it."""
        if not self.is_running():
            self.kill_server()
            self.start_server()

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.update(self.env)
        return subprocess.run(["pactl", *args], env=env, capture_output=True, text=True, check=check, timeout=10)

    def suspend(self, on: bool) -> None:
        """Suspend/resume the null sink: its monitor then delivers nothing (a real stall)."""
        self.pactl("suspend-sink", SINK, "1" if on else "0")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    # ---- this process ---------------------------------------------------------------------
    def _alsa_config_path(self) -> str:
        base = os.environ.get("ALSA_CONFIG_PATH") or _ALSA_DEFAULT_CONFIG
        return f"{base}:{self.alsa_conf}"

    def _write_alsa_conf(self) -> None:
        # The slave is defined inline so only one device ("soundmon_file") is listed. `plug`
        # converts whatever PortAudio asks (float32, any rate) from the raw s16le/16 kHz/mono file.
        self.alsa_conf.write_text(
            f"""pcm.{FILE_DEVICE} {{
    type plug
    slave {{
        pcm {{
            type file
            slave.pcm "null"
            file "/dev/null"
            infile "{self.file_input}"
            format "raw"
        }}
        format S16_LE
        rate {SINK_RATE}
        channels 1
    }}
    hint.description "soundmon tests: raw s16le mono 16 kHz from a file, no clock"
}}
"""
        )

    def activate(self) -> None:
        """Point this process's environment at the server and make PortAudio re-enumerate."""
        self._write_alsa_conf()
        self.set_file_input(np.zeros(SINK_RATE, dtype=np.int16))
        for key, value in self.env.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        rescan_portaudio()
        import sounddevice as sd

        for dev in sd.query_devices():
            if dev["name"] == self.device and dev["max_input_channels"] > 0:
                self.device_index = int(dev["index"])
        if self.device_index is None:
            names = ", ".join(d["name"] for d in sd.query_devices())
            raise RuntimeError(f"PortAudio does not list the ALSA 'pulse' device (devices: {names or 'none'})")

    def warm_up(self, timeout: float = 5.0) -> float:
        """Open a stream on "pulse" until its first callback (absorbs the ~2 s first-stream quirk)."""
        import sounddevice as sd

        got: list[float] = []
        t0 = time.monotonic()
        with sd.InputStream(device=self.device_index, samplerate=SINK_RATE, channels=1, dtype="float32",
                            callback=lambda *a: got.append(time.monotonic())):  # fmt: skip
            while not got and time.monotonic() - t0 < timeout:
                time.sleep(0.01)
        return (got[0] if got else time.monotonic()) - t0

    def deactivate(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    def close(self) -> None:
        self.deactivate()
        self.stop_server()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- feeding audio ----------------------------------------------------------------------
    def play(self, path: str | Path, pad_s: float = 0.1, latency_msec: int = 50) -> subprocess.Popen[bytes]:
        """Play a sound file into vsink with paplay, padded with `pad_s` of silence on both sides.

        The padded copy keeps the file's rate and channels (PulseAudio converts to the sink's
        16 kHz mono) and 16-bit samples stay 16-bit, so a 16 kHz mono s16 file arrives bit-exact.
        """
        info = sf.info(str(path))
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        subtype = "PCM_16" if info.subtype == "PCM_16" else "FLOAT"
        return self.play_array(data, rate, pad_s=pad_s, latency_msec=latency_msec, subtype=subtype)

    def play_array(
        self,
        samples: np.ndarray,
        rate: int,
        pad_s: float = 0.1,
        latency_msec: int = 50,
        subtype: str = "PCM_16",
    ) -> subprocess.Popen[bytes]:
        """Play float samples ((frames,) or (frames, channels)) at `rate` into vsink."""
        data = np.asarray(samples, dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        pad = np.zeros((round(pad_s * rate), data.shape[1]), dtype=np.float32)
        self._n += 1
        wav = self.tmp / f"play-{self._n}.wav"
        sf.write(str(wav), np.concatenate([pad, data, pad]), int(rate), subtype=subtype)
        env = dict(os.environ)
        env.update(self.env)
        cmd = ["paplay", f"--latency-msec={latency_msec}", f"--device={SINK}", str(wav)]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def set_file_input(self, samples: np.ndarray | str | Path) -> None:
        """What the ALSA file device returns: int16 array, float array in [-1, 1], or a sound file."""
        if isinstance(samples, (str, Path)):
            samples, _ = sf.read(str(samples), dtype="float32")
        data = np.asarray(samples)
        if data.ndim == 2:
            data = data.mean(axis=1)
        if data.dtype != np.int16:
            data = np.clip(np.round(data.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
        tmp = self.file_input.with_suffix(".tmp")
        data.astype("<i2").tofile(tmp)
        tmp.replace(self.file_input)  # atomic: a stream opening right now reads old or new, never half


def rescan_portaudio() -> None:
    """Re-initialise PortAudio so that it enumerates devices again (no stream may be open)."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()


def wait_for_audio(read: Callable[[float], np.ndarray], timeout: float = 10.0) -> np.ndarray:
    """Call `read(0.1)` until it returns samples (capture is really running); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        block = read(0.1)
        if len(block):
            return block
    pytest.fail(f"no audio captured within {timeout} s")


def align(captured: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """Offset of `reference` inside `captured` and the normalised correlation there (FFT-based)."""
    cap = np.asarray(captured, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if len(cap) < len(ref):
        cap = np.concatenate([cap, np.zeros(len(ref) - len(cap))])
    n = 1 << int(np.ceil(np.log2(len(cap) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(cap, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(cap) - len(ref) + 1]
    k = int(np.argmax(corr))
    seg = cap[k : k + len(ref)]
    denom = float(np.sqrt(np.dot(seg, seg) * np.dot(ref, ref))) or 1.0
    return k, float(np.dot(seg, ref) / denom)


_shared: PulseSink | None = None  # one server per test session, however many modules import the fixture
_users = 0


@pytest.fixture(scope="session", name="pulse_sink")
def pulse_sink_fixture() -> Iterator[PulseSink]:
    """A PulseAudio null sink captured through PortAudio (see the module docstring); skips if impossible.

    If several test modules import this fixture (each import is its own session fixture to
    pytest), they share one server: the last one to finish stops it.
    """
    global _shared, _users
    if _shared is None:
        if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
            pytest.skip(f"PulseAudio is not installed ({_INSTALL_HINT})")
        try:
            import sounddevice  # noqa: F401
        except OSError as exc:
            pytest.skip(f"sounddevice cannot load PortAudio ({exc}; {_INSTALL_HINT})")
        sink = PulseSink()
        try:
            sink.start_server()
            sink.activate()
            sink.warm_up()
        except Exception as exc:  # any failure to set up real audio is a skip with the reason
            reason = f"cannot run PulseAudio + PortAudio here: {exc}"
            sink.close()
            pytest.skip(reason)
        _shared = sink
    _users += 1
    try:
        _shared.ensure_running()
        yield _shared
    finally:
        _users -= 1
        if _users == 0 and _shared is not None:
            _shared.close()
            _shared = None

