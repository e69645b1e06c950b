// The run's BPE tokenizer in the browser: the same ids as Hugging Face `tokenizers` gives for the tokenizer.json
// that translate.py writes, and the same text back. Written for exactly that file, read from it, and nothing more:
//
//   text -> split off the special tokens written literally ("<s>", "<unk>", ...)
//        -> NFC ("u" + combining diaeresis becomes one "ü")
//        -> Metaspace: every space becomes "▁", a "▁" goes in front, a new word starts at each "▁"
//        -> Punctuation "isolated" (translate.py's default): every punctuation mark becomes a word of its own
//        -> BPE: each word starts as its characters (<unk> for one the vocabulary lacks), then the learnt merges,
//           lowest rank first, leftmost first
//
// A classic script: it adds `Tokenizer` to the one global, WebTransformer (Chromium runs no ES module from file://).
(function (WT) {
  'use strict';

  const SPACE = ' ';

  // What Rust's char::is_ascii_punctuation and the P* Unicode categories call punctuation, as tokenizers does.
  const ASCII_PUNCTUATION = new Set('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~');
  const UNICODE_PUNCTUATION = /^\p{P}$/u;
  function isPunctuation(ch) {
    return ASCII_PUNCTUATION.has(ch) || UNICODE_PUNCTUATION.test(ch);
  }

  function refuse(what, found, wanted) {
    throw new Error(`tokenizer.json: ${what} is ${JSON.stringify(found)}; this page reads ${wanted} (what translate.py writes)`);
  }

  // Read the tokenizer JSON; anything but the forms translate.py writes fails here, by name, not later in silence.
  function Tokenizer(spec) {
    if (!spec || typeof spec !== 'object') throw new Error('tokenizer.json: not a JSON object');
    const model = spec.model || {};
    if (model.type !== 'BPE') refuse('model.type', model.type, 'BPE');
    for (const key of ['dropout', 'continuing_subword_prefix', 'end_of_word_suffix']) {
      if (model[key] != null) refuse(`model.${key}`, model[key], 'null');
    }
    for (const key of ['fuse_unk', 'byte_fallback', 'ignore_merges']) {
      if (model[key]) refuse(`model.${key}`, model[key], 'false');
    }
    if (!spec.normalizer || spec.normalizer.type !== 'NFC') refuse('the normalizer', spec.normalizer, 'NFC');
    if (spec.post_processor != null) refuse('the post_processor', spec.post_processor, 'null');
    this.replacement = this.readPreTokenizer(spec.pre_tokenizer);
    const decoder = spec.decoder || {};
    if (decoder.type !== 'Metaspace' || decoder.replacement !== this.replacement || decoder.prepend_scheme !== 'always') {
      refuse('the decoder', spec.decoder, `Metaspace with "${this.replacement}" and prepend_scheme "always"`);
    }

    this.vocab = new Map(Object.entries(model.vocab)); // piece -> id
    this.pieces = []; // id -> piece
    for (const [piece, id] of this.vocab) this.pieces[id] = piece;
    this.unkId = this.vocab.get(model.unk_token);
    if (this.unkId === undefined) refuse('model.unk_token', model.unk_token, 'a token of the vocabulary');
    // merges[left][right] = rank: the order in which BPE learnt them, and the order it applies them
    this.merges = new Map();
    model.merges.forEach((merge, rank) => {
      const [left, right] = typeof merge === 'string' ? merge.split(' ') : merge; // older files: "a b"
      if (!this.merges.has(left)) this.merges.set(left, new Map());
      this.merges.get(left).set(right, rank);
    });
    // the special tokens (<pad>, <s>, </s>, <unk>): matched in the raw text before anything else, never merged
    this.added = (spec.added_tokens || []).map((token) => {
      for (const key of ['single_word', 'lstrip', 'rstrip', 'normalized']) {
        if (token[key]) refuse(`added token ${token.content}'s ${key}`, token[key], 'false');
      }
      return { content: token.content, id: token.id, special: token.special };
    });
    this.special = new Set(this.added.filter((t) => t.special).map((t) => t.id));
  }

  // Metaspace, alone or followed by Punctuation "isolated": the two forms of translate.py's --pre-tokenizer.
  Tokenizer.prototype.readPreTokenizer = function (pre) {
    const wanted = 'Metaspace (prepend_scheme "always", split true), alone or then Punctuation (behavior "Isolated")';
    if (!pre) refuse('the pre_tokenizer', pre, wanted);
    const steps = pre.type === 'Sequence' ? pre.pretokenizers : [pre];
    const meta = steps[0] || {};
    if (meta.type !== 'Metaspace' || meta.prepend_scheme !== 'always' || meta.split !== true) {
      refuse('the pre_tokenizer', pre, wanted);
    }
    if (steps.length === 2 && steps[1].type === 'Punctuation' && steps[1].behavior === 'Isolated') {
      this.punctuation = true;
    } else if (steps.length === 1) {
      this.punctuation = false;
    } else {
      refuse('the pre_tokenizer', pre, wanted);
    }
    return meta.replacement;
  };

  // Cut the raw text where a special token is written out, leftmost and longest first, as tokenizers does.
  Tokenizer.prototype.splitAdded = function (text) {
    const parts = []; // {text} or {id, piece}
    let start = 0;
    let i = 0;
    while (i < text.length) {
      let best = null;
      for (const token of this.added) {
        if (text.startsWith(token.content, i) && (!best || token.content.length > best.content.length)) best = token;
      }
      if (best) {
        if (i > start) parts.push({ text: text.slice(start, i) });
        parts.push({ id: best.id, piece: best.content });
        i += best.content.length;
        start = i;
      } else {
        i += 1;
      }
    }
    if (start < text.length) parts.push({ text: text.slice(start) });
    return parts;
  };

  // Metaspace, then Punctuation: one normalised stretch of text -> its words.
  Tokenizer.prototype.words = function (text) {
    const r = this.replacement;
    let s = text.split(SPACE).join(r); // only U+0020: a tab or a newline stays what it is (and becomes <unk>)
    if (!s.startsWith(r)) s = r + s; // prepend_scheme "always": every stretch starts a word
    const words = [];
    let word = '';
    for (const ch of s) {
      // a "▁" starts the next word (MergedWithNext); a punctuation mark is a word of its own
      if (ch === r && word) {
        words.push(word);
        word = '';
      }
      if (this.punctuation && isPunctuation(ch)) {
        if (word) words.push(word);
        words.push(ch);
        word = '';
      } else {
        word += ch;
      }
    }
    if (word) words.push(word);
    return words;
  };

  // BPE on one word: its characters, then merges by rank; {id, piece, text} per resulting symbol.
  Tokenizer.prototype.bpe = function (word) {
    const symbols = Array.from(word, (ch) => {
      const id = this.vocab.get(ch);
      return id === undefined ? { id: this.unkId, piece: this.pieces[this.unkId], text: ch } : { id, piece: ch, text: ch };
    });
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const right = this.merges.get(symbols[i].piece); // an <unk> has no merge: "<unk>" is never a part
        const rank = right && right.get(symbols[i + 1].piece);
        if (rank !== undefined && rank < bestRank) {
          best = i;
          bestRank = rank;
        }
      }
      if (best < 0) return symbols;
      const piece = symbols[best].piece + symbols[best + 1].piece;
      const text = symbols[best].text + symbols[best + 1].text;
      symbols.splice(best, 2, { id: this.vocab.get(piece), piece, text });
    }
  };

  // text -> {ids, pieces, unknown}: the ids Python's tokenizer.encode(text).ids gives, the pieces as its
  // .tokens, and the characters that became <unk> (shown on the page as such).
  Tokenizer.prototype.encode = function (text) {
    const ids = [];
    const pieces = [];
    const unknown = [];
    for (const part of this.splitAdded(text)) {
      if (part.id !== undefined) {
        ids.push(part.id);
        pieces.push(part.piece);
        continue;
      }
      for (const word of this.words(part.text.normalize('NFC'))) {
        for (const symbol of this.bpe(word)) {
          ids.push(symbol.id);
          pieces.push(symbol.piece);
          if (symbol.id === this.unkId) unknown.push(symbol.text);
        }
      }
    }
    return { ids, pieces, unknown };
  };

  // ids -> text, as tokenizer.decode(ids) does: special tokens left out, "▁" read as a space, none in front.
  Tokenizer.prototype.decode = function (ids) {
    const kept = ids.filter((id) => !this.special.has(id)).map((id) => this.pieces[id]);
    // the Metaspace decoder: in the first piece every "▁" goes (it only marked the start), elsewhere it is a space
    return kept.map((piece, i) => piece.split(this.replacement).join(i === 0 ? '' : SPACE)).join('');
  };

  Tokenizer.prototype.idToPiece = function (id) {
    return this.pieces[id];
  };

  WT.Tokenizer = Tokenizer;
})((globalThis.WebTransformer = globalThis.WebTransformer || {}));
