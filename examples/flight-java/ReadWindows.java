// Read windows from a running Heimdall over Arrow Flight, in Java (docs/remote.md).
//
//   mvn -q -f pom.xml dependency:copy-dependencies -DoutputDirectory=lib
//   java --add-opens=java.base/java.nio=ALL-UNNAMED -cp 'lib/*' ReadWindows.java \
//       HOST PORT STREAM [KEY ...]          (token: $HEIMDALL_TOKEN)
//
// Prints one JSON line per key: its found flag, length, event times and the window's rows
// (the newest `length` rows of the W x F tensor; the rows before them are padding).
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import org.apache.arrow.flight.CallHeaders;
import org.apache.arrow.flight.FlightCallHeaders;
import org.apache.arrow.flight.FlightClient;
import org.apache.arrow.flight.FlightStream;
import org.apache.arrow.flight.HeaderCallOption;
import org.apache.arrow.flight.Location;
import org.apache.arrow.flight.Ticket;
import org.apache.arrow.memory.BufferAllocator;
import org.apache.arrow.memory.RootAllocator;
import org.apache.arrow.vector.BigIntVector;
import org.apache.arrow.vector.BitVector;
import org.apache.arrow.vector.FieldVector;
import org.apache.arrow.vector.Float8Vector;
import org.apache.arrow.vector.VectorSchemaRoot;
import org.apache.arrow.vector.complex.FixedSizeListVector;
import org.apache.arrow.vector.types.pojo.ArrowType;

public class ReadWindows {
    public static void main(String[] args) throws Exception {
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        String stream = args[2];
        StringBuilder ticket = new StringBuilder("{\"stream\": " + quote(stream));
        if (args.length > 3) {  // the keys asked for; none: every key the node holds
            List<String> keys = new ArrayList<>();
            for (int i = 3; i < args.length; i++) keys.add(quote(args[i]));
            ticket.append(", \"keys\": [").append(String.join(", ", keys)).append("]");
        }
        ticket.append("}");
        CallHeaders headers = new FlightCallHeaders();
        String token = System.getenv("HEIMDALL_TOKEN");
        if (token != null && !token.isEmpty()) headers.insert("authorization", "Bearer " + token);

        try (BufferAllocator allocator = new RootAllocator();
             FlightClient client = FlightClient.builder(allocator,
                     Location.forGrpcInsecure(host, port)).build();
             FlightStream reply = client.getStream(
                     new Ticket(ticket.toString().getBytes(StandardCharsets.UTF_8)),
                     new HeaderCallOption(headers))) {
            while (reply.next()) {
                VectorSchemaRoot root = reply.getRoot();
                FieldVector key = root.getVector("key");
                BitVector found = (BitVector) root.getVector("found");
                BigIntVector length = (BigIntVector) root.getVector("length");
                FixedSizeListVector ts = (FixedSizeListVector) root.getVector("ts_ns");
                // the fixed-shape tensor's storage: a fixed-size list of W * F values
                FixedSizeListVector window = (FixedSizeListVector) root.getVector("window");
                BigIntVector tsValues = (BigIntVector) ts.getDataVector();
                Float8Vector values = (Float8Vector) window.getDataVector();
                int W = ts.getListSize();
                int F = window.getListSize() / W;
                for (int i = 0; i < root.getRowCount(); i++) {
                    int n = (int) length.get(i);
                    StringBuilder line = new StringBuilder("{\"key\": ");
                    Object k = key.getObject(i);
                    line.append(k instanceof Long ? k.toString() : quote(k.toString()));
                    line.append(", \"found\": ").append(found.get(i) == 1);
                    line.append(", \"length\": ").append(n).append(", \"ts_ns\": [");
                    for (int r = W - n; r < W; r++) {
                        if (r > W - n) line.append(", ");
                        line.append(tsValues.get(i * W + r));
                    }
                    line.append("], \"values\": [");
                    for (int r = W - n; r < W; r++) {
                        if (r > W - n) line.append(", ");
                        line.append("[");
                        for (int f = 0; f < F; f++) {
                            if (f > 0) line.append(", ");
                            line.append(values.get((i * W + r) * F + f));
                        }
                        line.append("]");
                    }
                    System.out.println(line.append("]}"));
                }
            }
        }
    }

    static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }
}
