from gpt_tui.cli import main

main()
