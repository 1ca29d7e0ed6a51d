"""Caption files in YouTube's real formats, as tests write them to disk or serve them."""

from __future__ import annotations

import json

# Manual captions in json3: a window-definition event without segs, then one event per caption.
MANUAL_JSON3 = json.dumps(
    {
        "wireMagic": "pb3",
        "pens": [{}],
        "wsWinStyles": [{}],
        "wpWinPositions": [{}],
        "events": [
            {"tStartMs": 0, "dDurationMs": 8000, "id": 1, "wpWinPosId": 1, "wsWinStyleId": 1},
            {"tStartMs": 200, "dDurationMs": 2600, "segs": [{"utf8": "The market opened higher"}]},
            {"tStartMs": 2800, "dDurationMs": 2400, "segs": [{"utf8": "this morning, and gold\nrose by"}]},
            {
                "tStartMs": 5200,
                "dDurationMs": 1800,
                "segs": [{"utf8": "two percent before noon &amp; more."}],
            },
        ],
    }
)

# Automatic captions in json3: word pieces with offsets, lines that overlap the next one, and the
# newline events YouTube appends between lines.
AUTO_JSON3 = json.dumps(
    {
        "wireMagic": "pb3",
        "events": [
            {"tStartMs": 0, "dDurationMs": 7000, "id": 1, "wpWinPosId": 1, "wsWinStyleId": 1},
            {
                "tStartMs": 120,
                "dDurationMs": 5000,
                "wWinId": 1,
                "segs": [
                    {"utf8": "the", "acAsrConf": 0},
                    {"utf8": " market", "tOffsetMs": 240, "acAsrConf": 0},
                    {"utf8": " opened", "tOffsetMs": 600, "acAsrConf": 0},
                    {"utf8": " higher", "tOffsetMs": 1000, "acAsrConf": 0},
                ],
            },
            {"tStartMs": 2100, "dDurationMs": 3020, "wWinId": 1, "aAppend": 1, "segs": [{"utf8": "\n"}]},
            {
                "tStartMs": 2110,
                "dDurationMs": 4000,
                "wWinId": 1,
                "segs": [
                    {"utf8": "this", "acAsrConf": 0},
                    {"utf8": " morning", "tOffsetMs": 300, "acAsrConf": 0},
                ],
            },
        ],
    }
)

MANUAL_VTT = """WEBVTT
Kind: captions
Language: en

NOTE written by hand

1
00:00:00.200 --> 00:00:02.800 align:start position:0%
The market opened <i>higher</i>

2
00:00:02.800 --> 00:00:05.200
this morning, and gold
rose by

00:05.200 --> 00:07.000
two percent before noon &amp; more.
"""

# YouTube's automatic VTT: each cue repeats the previous line above the new one (with inline word
# times), and a 10 ms cue shows the finished line alone. Its blank-looking lines hold one space.
AUTO_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.120 --> 00:00:02.100 align:start position:0%
<SP>
the<00:00:00.360><c> market</c><00:00:00.720><c> opened</c><00:00:01.120><c> higher</c>

00:00:02.100 --> 00:00:02.110 align:start position:0%
the market opened higher
<SP>

00:00:02.110 --> 00:00:04.000 align:start position:0%
the market opened higher
this<00:00:02.410><c> morning</c>

00:00:04.000 --> 00:00:04.010 align:start position:0%
this morning
<SP>
""".replace("<SP>", " ")
