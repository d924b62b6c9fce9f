-- mpv script for tests/icy.rs: print the stream's ICY title (the
-- `icy-title` entry of the `metadata` property) each time it changes.
mp.observe_property("metadata", "native", function(_, value)
    if value and value["icy-title"] then
        io.stdout:write("icy-title: " .. value["icy-title"] .. "\n")
        io.stdout:flush()
    end
end)
