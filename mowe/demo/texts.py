"""Words, sentence templates and instructions of the demo corpus (data only)."""

from __future__ import annotations

__all__ = ["INSTRUCTIONS"]

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# ~200 common words, split by role so that templates make (mostly) grammatical sentences and a
# co-reasoning sentence names exactly one colour / animal.
_WORDS: dict[str, tuple[str, ...]] = {
    "det": ("the", "my", "your", "our", "this", "that", "every", "his", "her", "one"),
    "adj": ("big", "small", "old", "new", "happy", "quiet", "loud", "warm", "cold", "bright", "dark", "quick",
            "slow", "tall", "short", "soft", "young", "busy", "clean", "heavy", "little", "good", "long", "nice"),
    "colour": ("red", "blue", "green", "yellow", "black", "white", "brown", "orange", "purple", "pink"),
    "animal": ("dog", "cat", "horse", "bird", "fish", "cow", "sheep", "goat", "mouse", "rabbit", "duck", "lion",
               "tiger", "bear", "fox", "frog"),
    "thing": ("car", "house", "book", "tree", "door", "table", "chair", "phone", "river", "garden", "window",
              "road", "train", "boat", "city", "school", "kitchen", "letter", "bread", "coffee", "water",
              "music", "paper", "ship", "bridge", "island", "market", "forest", "mountain", "lamp", "clock",
              "shoe", "bottle", "cup", "ball", "box", "key", "bed", "cake", "radio"),
    "person": ("man", "woman", "child", "teacher", "doctor", "farmer", "friend", "student", "driver", "baker",
               "mother", "father", "sister", "brother"),
    "vi": ("runs", "sleeps", "waits", "sings", "falls", "stops", "moves", "shines", "works", "plays", "jumps",
           "swims", "smiles", "turns", "rests", "stays", "starts", "shakes"),
    "vt": ("sees", "likes", "finds", "opens", "holds", "carries", "buys", "paints", "cleans", "brings", "wants",
           "needs", "watches", "follows", "keeps", "pulls"),
    "adv": ("today", "now", "again", "slowly", "quickly", "here", "there", "often", "outside", "early", "late",
            "always", "tonight", "inside", "together", "sometimes"),
    "prep": ("near", "behind", "under", "over", "by", "beside"),
}

# Sentence templates, 3-6 words. Keys refer to _WORDS, "noun" = thing | animal | person,
# "adjc" = adj | colour.
_ASR_TEMPLATES = (
    ("det", "noun", "vi"),
    ("det", "adjc", "noun", "vi"),
    ("det", "noun", "vi", "adv"),
    ("det", "adjc", "noun", "vi", "adv"),
    ("det", "person", "vt", "det", "noun"),
    ("det", "person", "vt", "det", "adjc", "noun"),
    ("det", "noun", "vi", "prep", "det", "noun"),
)

# ≥5 paraphrases per task, one picked at random per example. Closed-ended tasks name their options.
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "asr": (
        "Transcribe the speech.",
        "What does the speaker say?",
        "Write down exactly what is spoken in this clip.",
        "Please transcribe this audio.",
        "Give a verbatim transcript of the recording.",
        "Convert the spoken words to text.",
    ),
    "gender": (
        "Is the speaker male or female?",
        "What is the gender of the speaker? Answer male or female.",
        "Does this voice belong to a male or a female speaker?",
        "Classify the speaker's gender as male or female.",
        "Male or female: who is speaking?",
        "Tell me whether the speaker is male or female.",
    ),
    "accent": (
        "Which accent does the speaker have: american, british, scottish or caribbean?",
        "What accent is this? Choose american, british, scottish or caribbean.",
        "Identify the speaker's accent (american, british, scottish, caribbean).",
        "Where is this English accent from: american, british, scottish or caribbean?",
        "Classify the accent of the speech as american, british, scottish or caribbean.",
    ),
    "speaking_rate": (
        "Is the speaker talking slowly, at a normal pace, or fast? Answer slow, normal or fast.",
        "How fast is the speech: slow, normal or fast?",
        "Rate the speaking rate as slow, normal or fast.",
        "Describe the pace of the speaker: slow, normal or fast?",
        "Is this speech slow, normal or fast?",
    ),
    "sound_event": (
        "What kind of sound is this? Choose from tone, chirp, noise, clicks, siren, tremolo.",
        "Classify this sound as tone, chirp, noise, clicks, siren or tremolo.",
        "Which sound do you hear: tone, chirp, noise, clicks, siren or tremolo?",
        "Identify the sound event (tone, chirp, noise, clicks, siren, tremolo).",
        "Name the type of this sound: tone, chirp, noise, clicks, siren or tremolo.",
    ),
    "chord": (
        "Is this chord major, minor or diminished?",
        "What is the quality of the chord: major, minor or diminished?",
        "Classify the triad as major, minor or diminished.",
        "Which chord quality do you hear: major, minor or diminished?",
        "Tell me if the chord is major, minor or diminished.",
    ),
    "tempo": (
        "Is the tempo of this click track slow, medium or fast?",
        "How fast is the beat: slow, medium or fast?",
        "Classify the tempo as slow, medium or fast.",
        "What is the tempo of the clicks: slow, medium or fast?",
        "Rate the speed of the beat as slow, medium or fast.",
    ),
}
# Co-reasoning needs both the background sound and the speech; answers are "<sound>, <item>".
_CO_QUESTIONS: dict[str, tuple[str, ...]] = {
    "first_digit": (
        "What sound plays behind the speaker, and what digit does the speaker say first?",
        "Name the background sound and the first digit spoken, separated by a comma.",
        "Which sound is in the background, and which digit comes first in the speech?",
        "Tell me the background sound, then the first number the speaker says.",
        "What is the background sound, and what is the first digit the speaker says?",
    ),
    "last_digit": (
        "What sound plays behind the speaker, and what digit does the speaker say last?",
        "Name the background sound and the last digit spoken, separated by a comma.",
        "Which sound is in the background, and which digit comes last in the speech?",
        "Tell me the background sound, then the last number the speaker says.",
        "What is the background sound, and what is the final digit the speaker says?",
    ),
    "colour": (
        "What sound plays behind the speaker, and what colour does the speaker mention?",
        "Name the background sound and the colour that is spoken, separated by a comma.",
        "Which sound is in the background, and which colour is mentioned in the speech?",
        "Tell me the background sound, then the colour the speaker names.",
        "What is the background sound, and what colour does the speaker say?",
    ),
    "animal": (
        "What sound plays behind the speaker, and what animal does the speaker mention?",
        "Name the background sound and the animal that is spoken, separated by a comma.",
        "Which sound is in the background, and which animal is mentioned in the speech?",
        "Tell me the background sound, then the animal the speaker names.",
        "What is the background sound, and what animal does the speaker talk about?",
    ),
}
INSTRUCTIONS["co_reasoning"] = tuple(q for qs in _CO_QUESTIONS.values() for q in qs)
