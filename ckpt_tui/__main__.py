from ckpt_tui.cli import main

main()
