"""An end device's answers to the network's MAC commands (LoRaWAN 1.0.4 ch. 5): part of
firmware.lorawan.device's EndDevice, working on its state, in a module of its own because a
network sends MAC commands once in a while: EndDevice imports this (and with it the MAC command
codec, protocol.lorawan.mac) for a downlink that carries some, and unloads both after it, so
neither their code nor the command and field names stay in a device's RAM (about 1.5 KB).
"""

from protocol.lorawan import mac


def answer(dev, cmds, mono):
    """Apply the decoded commands `cmds` of one downlink to EndDevice `dev` (at mono ms) and
    queue their answers: once (with the next uplink) or sticky (until a downlink comes)."""
    once = []
    sticky = []
    reg = dev.region
    for c in cmds:
        name = c["name"]
        if name == "LinkCheckAns":
            dev.link_check = (c["margin"], c["gw_cnt"])
        elif name == "DeviceTimeAns":
            dev.device_time = (c["seconds"], c["fractional"])
            dev._time_answered(mac.device_time_unix_ms(c), mono)
        elif name == "LinkADRReq":
            once.append(_link_adr(dev, c))
        elif name == "DutyCycleReq":
            dev._max_dc = 1 << c["max_duty_cycle"]
            once.append({"name": "DutyCycleAns"})
        elif name == "DevStatusReq":
            m = int(dev.last_snr or 0)
            m = -32 if m < -32 else (31 if m > 31 else m)
            once.append({"name": "DevStatusAns", "battery": 0, "margin": m})  # mains powered
        elif name == "RXTimingSetupReq":
            d = c["delay"]
            dev._rx1_delay = (d if d else 1) * 1000
            sticky.append({"name": "RXTimingSetupAns"})
        elif name == "RXParamSetupReq":
            f_ok = reg.in_band(c["frequency"])
            dr_ok = c["rx2_data_rate"] < reg.n_data_rates
            off_ok = c["rx1_dr_offset"] < reg.rx1_dr_offsets
            if f_ok and dr_ok and off_ok:
                dev._rx2_freq = c["frequency"]
                dev._rx2_dr = c["rx2_data_rate"]
                dev._rx1_dr_offset = c["rx1_dr_offset"]
            sticky.append({"name": "RXParamSetupAns", "rx1_dr_offset_ack": off_ok,
                           "rx2_data_rate_ack": dr_ok, "channel_ack": f_ok})
        elif name == "NewChannelReq":
            i, f = c["ch_index"], c["frequency"]
            f_ok = i >= 3 and i < reg.max_channels and (f == 0 or reg.channel_ok(f))
            dr_ok = c["min_dr"] <= c["max_dr"] < reg.n_data_rates
            if f_ok and dr_ok:
                dev._channels[i] = f or None
                dev._enabled[i] = f != 0
            once.append({"name": "NewChannelAns", "data_rate_range_ok": dr_ok,
                         "channel_frequency_ok": f_ok})
        elif name == "DlChannelReq":
            i, f = c["ch_index"], c["frequency"]
            exists = i < reg.max_channels and dev._channels[i] is not None
            f_ok = reg.channel_ok(f)
            if exists and f_ok:
                dev._dl_freq[dev._channels[i]] = f
            sticky.append({"name": "DlChannelAns", "uplink_frequency_exists": exists,
                           "channel_frequency_ok": f_ok})
        # TxParamSetupReq: not implemented in EU868 / KR920 (RP002), so no answer
    if once:
        dev._fopts_once = dev._fopts_once + mac.encode_commands(once, True)
    if sticky:
        dev._fopts_sticky = mac.encode_commands(sticky, True)
    if dev.joined and dev.cfg["keep_session"] and (sticky or once):
        dev._save_session()


def _link_adr(dev, c):
    """Apply a LinkADRReq if channels, data rate and power are all acceptable; its answer."""
    reg = dev.region
    dr, pw, mask, cntl = c["data_rate"], c["tx_power"], c["ch_mask"], c["ch_mask_cntl"]
    n = reg.max_channels
    if cntl == 0:
        enabled = [bool(mask >> i & 1) for i in range(n)]
        ch_ok = mask != 0
        for i in range(n):
            if enabled[i] and dev._channels[i] is None:
                ch_ok = False
    elif cntl == 6:
        enabled = [f is not None for f in dev._channels]
        ch_ok = True
    else:
        enabled = None
        ch_ok = False
    dr_ok = dr == 15 or reg.is_lora(dr)
    pw_ok = pw == 15 or pw < len(reg.tx_power_offsets)
    if ch_ok and dr_ok and pw_ok:
        dev._enabled = enabled
        if dr != 15:
            dev.dr = dr
        if pw != 15:
            dev.tx_power_dbm = reg.tx_power_eirp(pw)
        dev.nb_trans = c["nb_trans"] or 1
    return {"name": "LinkADRAns", "power_ack": pw_ok, "data_rate_ack": dr_ok,
            "channel_mask_ack": ch_ok}
