from pipewarden.cli import main

main()
