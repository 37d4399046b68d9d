"""Audio input devices as PortAudio sees them: listing (for `soundmon devices`) and resolving
`audio.device` (None / index / name substring) to one input device.

sounddevice is imported lazily inside the functions so that importing this module never fails
on a machine without libportaudio2; the failure becomes a one-line `DeviceError` instead.
"""

from __future__ import annotations

from typing import Any

from monitor.errors import DeviceError

__all__ = [
    "COMMON_RATES",
    "format_devices",
    "import_sounddevice",
    "list_input_devices",
    "rescan_devices",
    "resolve_input_device",
]

COMMON_RATES: tuple[int, ...] = (8000, 16000, 22050, 32000, 44100, 48000)


def import_sounddevice() -> Any:
    """The `sounddevice` module, or DeviceError if PortAudio itself is missing."""
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice raises OSError("PortAudio library not found")
        raise DeviceError(f"cannot use audio input: {exc} (install the libportaudio2 package)") from None
    return sd


def rescan_devices() -> None:
    """Make PortAudio enumerate devices again (it only does so when it initialises).

    Needed after a USB microphone is re-plugged (its index and ALSA card may change) and after
    a sound server starts. Terminating PortAudio closes every open stream of this process, so
    call it only when this process has no other stream open (true for the daemon).
    """
    sd = import_sounddevice()
    sd._terminate()
    sd._initialize()


def _input_devices(sd: Any) -> list[dict[str, Any]]:
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list audio devices: {exc}") from None
    out = []
    for dev in devices:
        if int(dev["max_input_channels"]) > 0:
            info = dict(dev)
            info["hostapi_name"] = hostapis[dev["hostapi"]]["name"]
            out.append(info)
    return out


def _default_input_index(sd: Any) -> int | None:
    try:
        idx = sd.default.device[0]
    except Exception:  # sounddevice raises various errors when there are no devices
        return None
    try:
        idx = int(idx)
    except (TypeError, ValueError):
        return None
    return idx if idx >= 0 else None


def list_input_devices(check_rates: bool = True) -> list[dict[str, Any]]:
    """Input devices: index, name, hostapi, max_input_channels, default_samplerate, default, rates.

    `rates` lists which of COMMON_RATES the device accepts (mono, float32), asked of PortAudio
    with `check_input_settings`; a device that is busy (e.g. opened by the running daemon) may
    accept none. With `check_rates=False` the (slow-ish, it opens the device) check is skipped.
    """
    sd = import_sounddevice()
    default = _default_input_index(sd)
    result = []
    for dev in _input_devices(sd):
        rates: list[int] = []
        if check_rates:
            for rate in COMMON_RATES:
                try:
                    sd.check_input_settings(device=dev["index"], samplerate=rate, channels=1, dtype="float32")
                except Exception:  # PortAudioError or ValueError: rate not accepted
                    continue
                rates.append(rate)
        result.append(
            {
                "index": int(dev["index"]),
                "name": str(dev["name"]),
                "hostapi": str(dev["hostapi_name"]),
                "max_input_channels": int(dev["max_input_channels"]),
                "default_samplerate": float(dev["default_samplerate"]),
                "default": int(dev["index"]) == default,
                "rates": rates,
            }
        )
    return result


def format_devices(devices: list[dict[str, Any]]) -> str:
    """A readable table of `list_input_devices()`; a clear sentence when there are none."""
    if not devices:
        return (
            "No audio input devices found. Is the microphone plugged in, and is this user in the "
            "'audio' group? (arecord -l lists the ALSA capture cards.)"
        )
    rows = [("", "index", "name", "host API", "in ch", "default Hz", "accepted rates (Hz)")]
    for d in devices:
        rows.append(
            (
                "*" if d.get("default") else "",
                str(d["index"]),
                d["name"],
                d["hostapi"],
                str(d["max_input_channels"]),
                f"{d['default_samplerate']:g}",
                ", ".join(str(r) for r in d.get("rates", [])) or "none (busy?)",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("* = default input. Put the index or part of the name in audio.device.")
    return "\n".join(lines)


def _one_line_list(inputs: list[dict[str, Any]]) -> str:
    if not inputs:
        return "none (no input devices found)"
    return ", ".join(f"[{d['index']}] {d['name']}" for d in inputs)


def resolve_input_device(spec: int | str | None) -> dict[str, Any]:
    """The PortAudio device dict (with 'index') that `audio.device` names, or DeviceError.

    None = the default input; int = PortAudio index; str = case-insensitive substring of an
    input device's name (an exact name wins; several different matches are an error rather
    than a guess, because the wrong microphone would be worse than a clear message).
    """
    sd = import_sounddevice()
    inputs = _input_devices(sd)
    if spec is None:
        idx = _default_input_index(sd)
        for d in inputs:
            if d["index"] == idx:
                return d
        if len(inputs) >= 1:
            return inputs[0]
        raise DeviceError(f"audio.device: no default input device; available inputs: {_one_line_list(inputs)}")
    if isinstance(spec, bool):  # bool is an int subclass; it is never a meaningful device
        raise DeviceError(f"audio.device {spec!r}: not a device index or name")
    if isinstance(spec, int):
        for d in inputs:
            if d["index"] == spec:
                return d
        raise DeviceError(
            f"audio.device {spec}: no such input device; available inputs: {_one_line_list(inputs)}"
        )
    want = str(spec).strip().lower()
    exact = [d for d in inputs if d["name"].lower() == want]
    if exact:
        return exact[0]
    matches = [d for d in inputs if want in d["name"].lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(
            f"audio.device '{spec}': no such input device; available inputs: {_one_line_list(inputs)}"
        )
    raise DeviceError(
        f"audio.device '{spec}' matches several input devices: {_one_line_list(matches)}; "
        "use a longer part of the name or the index"
    )
