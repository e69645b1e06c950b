"""The machinery of translate.py, one module for each thing it holds. translate.py keeps the command line's
commands and the training loop, and reads top to bottom; what a real task needs around them lives here:

    corpora       the sentence pairs: the numbers task, the user's files, Multi30k (fetched and checked)
    batches       one shared BPE vocabulary (§5.1) and batches by length under a token budget (§5.1)
    checkpoints   files that survive a kill and load without unpickling code; the model and tokenizer back
    processes     one process, or many under torchrun (torch.distributed)
    precision     float32 or bfloat16 autocast, chosen for the processor
    decoding      beam search and greedy decoding of whole files, BLEU and chrF with sacreBLEU's signature
    settings      every command's settings: one validated object, built once from the command line
    web           the page that runs a trained model in a browser (translate.py export-web)

The model, its loss and its schedule are transformer.py's; nothing here copies them.
"""
