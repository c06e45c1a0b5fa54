from voicecall.engine.cli import main

main()
