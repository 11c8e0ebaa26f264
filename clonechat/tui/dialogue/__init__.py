"""The parts of the dialogue screen, each with one job, talking to the screen by messages.

:class:`~clonechat.tui.screens.dialogue.DialogueScreen` composes them and owns what they share:
the transcript and which path of the tree it shows. A part never calls another part; it posts
a Textual message that bubbles up to the screen, and the screen decides what changes:

- :mod:`.live_run`: a dialogue run in this process (start, pause, stop, continue), its tokens
  and finished turns (``LiveRun.*``, :class:`~.messages.TurnLanded`);
- :mod:`.follow`: turns and predictions another process (a batch) commits to the dialogue
  shown, as they land (:class:`~.messages.TurnLanded`, :class:`~.messages.PredictionsScored`);
- :mod:`.navigation`: moves through the tree (parent, child, sibling branches) and bookmarks
  (``TreeNavigator.Go``); the bookmarks themselves are held by the app (:mod:`.bookmarks`);
- :mod:`.forking`: an edit of one message stored as a new branch (``Forker.Forked``);
- :mod:`.side_panel`: the predictions beside the selected turn, with their scores.

The screen's own pieces: :mod:`.path_view` (the transcript, and which path it shows),
:mod:`.status_line`, :mod:`.keys` (bindings and palette entries) and :mod:`.access` (the run
database, read-only until something writes).
"""
