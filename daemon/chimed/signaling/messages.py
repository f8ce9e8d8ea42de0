"""Builders of the frames a Chime client sends, as the official web client fills them.

Plain functions, no I/O: the session decides when to send, these decide what.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence

from chime.signaling import signaling_pb2 as sig

import chimed

Frame = sig.SdkSignalFrame

AUDIO_TRACK_LABEL = "AmazonChimeExpressAudio"
AUDIO_STREAM_ID = 1
AUDIO_GROUP_ID = 1
# The web client's video send descriptor: stream 2 / group 2 are placeholders the service
# replaces (SUBSCRIBE_ACK allocations carry the real ids), re-sent on every SUBSCRIBE.
VIDEO_TRACK_LABEL = "AmazonChimeExpressVideo"
VIDEO_STREAM_ID = 2
VIDEO_GROUP_ID = 2
VIDEO_FRAMERATE = 15
VIDEO_MAX_BITRATE_KBPS = 1500  # the web client's uplink policy with at most two publishers
CLIENT_SOURCE = "chimed"


def utc_offset() -> str:
    """This machine's UTC offset as +HH:MM / -HH:MM."""
    offset = -time.altzone if time.daylight and time.localtime().tm_isdst else -time.timezone
    sign = "+" if offset >= 0 else "-"
    offset = abs(offset)
    return f"{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}"


def client_details() -> sig.SdkClientDetails:
    return sig.SdkClientDetails(
        app_name="chimed",
        app_version=chimed.__version__,
        platform_name="python",
        platform_version=platform.python_version(),
        client_source=CLIENT_SOURCE,
        chime_sdk_version=chimed.__version__,
        client_utc_offset=utc_offset(),
        os_name=platform.system(),
        os_version=platform.release(),
    )


def join(audio_session_id: int) -> Frame:
    # HAS_STREAM_UPDATE: without it the service sends this client no presence updates
    # (AUDIO_STREAM_ID_INFO), and the session could never see itself present.
    return Frame(
        type=Frame.JOIN,
        join=sig.SdkJoinFrame(
            protocol_version=2,
            flags=sig.HAS_STREAM_UPDATE,
            client_details=client_details(),
            audio_session_id=audio_session_id,
        ),
    )


def audio_send_stream(attendee_id: str) -> sig.SdkStreamDescriptor:
    return sig.SdkStreamDescriptor(
        stream_id=AUDIO_STREAM_ID,
        group_id=AUDIO_GROUP_ID,
        framerate=15,
        max_bitrate_kbps=600,
        avg_bitrate_bps=400000,
        track_label=AUDIO_TRACK_LABEL,
        attendee_id=attendee_id,
        media_type=sig.AUDIO,
    )


def video_send_stream(attendee_id: str) -> sig.SdkStreamDescriptor:
    return sig.SdkStreamDescriptor(
        stream_id=VIDEO_STREAM_ID,
        group_id=VIDEO_GROUP_ID,
        framerate=VIDEO_FRAMERATE,
        max_bitrate_kbps=VIDEO_MAX_BITRATE_KBPS,
        avg_bitrate_bps=0,
        track_label=VIDEO_TRACK_LABEL,
        attendee_id=attendee_id,
        media_type=sig.VIDEO,
    )


def subscribe(
    sdp_offer: str,
    audio_host: str,
    audio_muted: bool,
    attendee_id: str,
    *,
    send_video: bool = False,
    receive_stream_ids: Sequence[int] = (0,),
) -> Frame:
    # Audio only: duplex RX with the audio send stream. Sending video: DUPLEX with the video
    # descriptor too. receive_stream_ids line up with the offer's video m-sections: 0 for the
    # camera slot (and dropped sections), the stream id for each recvonly one.
    send_streams = [audio_send_stream(attendee_id)]
    if send_video:
        send_streams.append(video_send_stream(attendee_id))
    return Frame(
        type=Frame.SUBSCRIBE,
        sub=sig.SdkSubscribeFrame(
            duplex=sig.DUPLEX if send_video else sig.RX,
            send_streams=send_streams,
            receive_stream_ids=list(receive_stream_ids),
            sdp_offer=sdp_offer,
            audio_host=audio_host,
            audio_muted=audio_muted,
        ),
    )


def pause(stream_ids: Sequence[int], paused: bool) -> Frame:
    """PAUSE (or RESUME) the reception of these remote streams."""
    return Frame(
        type=Frame.PAUSE if paused else Frame.RESUME,
        pause=sig.SdkPauseResumeFrame(stream_ids=list(stream_ids)),
    )


def leave() -> Frame:
    return Frame(type=Frame.LEAVE, leave=sig.SdkLeaveFrame())


def audio_control(muted: bool) -> Frame:
    return Frame(type=Frame.AUDIO_CONTROL, audio_control=sig.SdkAudioControlFrame(muted=muted))


def data_message(topic: str, data: bytes, lifetime_ms: int) -> Frame:
    payload = sig.SdkDataMessagePayload(topic=topic, data=data)
    if lifetime_ms:
        payload.lifetime_ms = lifetime_ms
    return Frame(type=Frame.DATA_MESSAGE, data_message=sig.SdkDataMessageFrame(messages=[payload]))


def ping(ping_id: int) -> Frame:
    return Frame(
        type=Frame.PING_PONG, ping_pong=sig.SdkPingPongFrame(type=sig.PING, ping_id=ping_id)
    )


def pong(ping_id: int) -> Frame:
    return Frame(
        type=Frame.PING_PONG, ping_pong=sig.SdkPingPongFrame(type=sig.PONG, ping_id=ping_id)
    )
